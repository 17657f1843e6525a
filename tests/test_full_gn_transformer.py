"""The full-gn paper's transformer problem: causal masking, the parameter layout the
optimizers see (layer-wise GN blocks, Muon's 2-D matrices), the reversal task's data
and loss mask, and one step of each optimizer on a tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invphys import optim
from invphys.experiments import _gn_bench as gb
from invphys.experiments.full_gn import mlp
from invphys.experiments.full_gn import transformer as tr


def _tiny(layers=2, d=8, heads=2, seq=6, vocab=5):
    init = jax.jit(lambda k: tr.init_transformer(k, vocab, d, heads, layers, seq))
    return init(jax.random.key(0))


def test_logits_shape_and_causal_masking():
    p = _tiny()
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 5, (3, 6)))
    apply = jax.jit(tr.apply_fn(2))
    logits = apply(p, tokens)
    assert logits.shape == (3, 6, 5)
    changed = tokens.at[:, 3].set((tokens[:, 3] + 1) % 5)
    other = apply(p, changed)
    # positions 0..2 never see token 3: the masked attention weights are exactly zero
    np.testing.assert_array_equal(np.asarray(logits[:, :3]), np.asarray(other[:, :3]))
    assert np.all(np.abs(np.asarray(logits[:, 3:] - other[:, 3:])).max(axis=(1, 2)) > 1e-6)


def test_reversal_problem_size_and_blocks():
    pr = mlp.reversal()
    p = jax.jit(pr.params0)(jax.random.key(0))
    d, r, layers, vocab, seq = 64, 2, 2, 9, 12
    per_block = 4 * (d * d + d) + 2 * 2 * d + (d * r * d + r * d) + (r * d * d + d)
    expected = layers * per_block + vocab * d + seq * d + 2 * d + (d * vocab + vocab)
    assert gb.num_params(p) == expected
    assert 50_000 <= expected <= 200_000
    labels = jax.tree.leaves(optim.by_layer(p))
    # one block per embedding, LayerNorm and linear map: 8 per layer, 4 outside
    assert len(set(labels)) == 8 * layers + 4
    assert "['blocks'][1]['fc2']" in labels
    # Muon's default rule orthogonalises the 2-D leaves: exactly the weight matrices
    flat = jax.tree_util.tree_flatten_with_path(p)[0]
    assert all((leaf.ndim == 2) == (path[-1].key == "w") for path, leaf in flat)
    assert jax.eval_shape(pr.apply, p, pr.x[:2]).shape == (2, seq, vocab)
    # Muon's scope: the blocks' 2-D weights; embeddings, head, biases, gains to AdamW
    scope = jax.tree_util.tree_flatten_with_path(
        gb.muon_hidden_weights(p), is_leaf=lambda v: v is None or hasattr(v, "output_axis"))[0]
    muon = {jax.tree_util.keystr(k) for k, v in scope if v is not None}
    assert muon == {f"['blocks'][{i}]['{u}']['w']" for i in range(layers)
                    for u in ("q", "k", "v", "o", "fc1", "fc2")}


def test_muon_scope_of_an_mlp_is_its_hidden_weights():
    p = gb.init_mlp(jax.random.key(0), (8, 64, 64, 64, 1))
    scope = gb.muon_hidden_weights(p)
    assert [layer["w"] is not None for layer in scope] == [False, True, True, False]
    assert all(layer["b"] is None for layer in scope)


def test_reversal_data_and_loss_mask():
    x, y = tr.reversal_data(5, 4, 3, seed=1)
    assert x.shape == y.shape == (5, 8)
    assert np.all(x[:, 4] == 3)  # the separator
    np.testing.assert_array_equal(y[:, 4:], x[:, 3::-1])  # the reversed prefix
    assert np.all(y[:, :4] == -1)
    logits = jax.random.normal(jax.random.key(2), (5, 8, 4))
    ce = jax.jit(tr.masked_cross_entropy)
    loss = ce(logits, jnp.asarray(y))
    # the masked positions do not enter; the rest is the plain mean cross-entropy
    moved = logits.at[:, :4].add(10.0 * jax.random.normal(jax.random.key(3), (5, 4, 4)))
    assert float(ce(moved, jnp.asarray(y))) == pytest.approx(float(loss))
    ref = optax.softmax_cross_entropy_with_integer_labels(logits[:, 4:], jnp.asarray(y[:, 4:]))
    assert float(loss) == pytest.approx(float(jnp.mean(ref)), rel=1e-12)


@pytest.mark.slow  # compiling a GN step (CG, line search) costs several seconds
def test_one_full_gn_step_lowers_the_loss_of_a_tiny_transformer():
    x, y = (jnp.asarray(a) for a in tr.reversal_data(8, 3, 4, seed=0))
    p = _tiny(layers=1, d=8, heads=2, seq=6, vocab=5)
    model_fn = lambda q: tr.transformer_apply(q, x, heads=2)
    loss_fn = lambda o: tr.masked_cross_entropy(o, y)
    opt = gb.gn_methods(cg_max_steps=10)[0].make(0.0)

    @jax.jit
    def losses(q):
        _, g, kw = optim.extra_args(model_fn, loss_fn, q, jax.random.key(1))
        u, state = opt.update(g, opt.init(q), q, **kw)
        return loss_fn(model_fn(q)), loss_fn(model_fn(optax.apply_updates(q, u))), state

    l0, l1, state = losses(p)
    # the line search accepts a step only if the loss falls; a rejected one would be zero
    assert bool(state.accepted)
    assert float(l1) < float(l0)

"""The extra-arguments contract every optimizer in :mod:`invphys.optim` follows.

One place states it, so the trainer, plain optax loops and the optimizers agree::

    updates, state = opt.update(
        grads, state, params,
        model_fn=model_fn,   # params -> outputs (a pytree): the model on the current batch
        loss_fn=loss_fn,     # outputs -> scalar loss (mean over the batch); closes over targets
        value=value,         # loss_fn(model_fn(params)), already computed by the caller
        grad=grads,          # the same as the first argument (optax's line-search convention)
        value_fn=value_fn,   # params -> scalar, = loss_fn(model_fn(params)) (optax's convention)
        key=key,             # a PRNG key for this step
    )
    params = optax.apply_updates(params, updates)

``params`` is the trainable pytree (arrays only, e.g. the first half of
``eqx.partition(model, eqx.is_inexact_array)``); ``grads`` has its structure.
Updates are *added* to ``params``. Every optimizer here accepts these keywords and
ignores the ones it does not use (and any others). optax's plain transformations
(``optax.adam``) ignore them too, but its line-search ones do not: in optax 0.2.8
``scale_by_zoom_linesearch`` (inside ``optax.lbfgs``) raises ``TypeError`` on any
keyword ``value_fn`` does not take (``model_fn``, ``loss_fn``, ``key``). Wrap those
with :func:`with_contract` (``with_contract(optax.lbfgs())``), which forwards only
``value``, ``grad`` and ``value_fn``; wrapping an optimizer that needs nothing more
is harmless, so a trainer may wrap every non-``invphys.optim`` optimizer.

The Gauss-Newton optimizers need ``model_fn`` and ``loss_fn``:
the split of the objective into a model and a loss is what defines the
Gauss-Newton matrix ``G = J^T H_loss J`` (``J`` the Jacobian of ``model_fn``,
``H_loss`` the Hessian of ``loss_fn`` at the outputs). ``loss_fn`` should be
convex in the outputs (squared error, cross-entropy) so that ``G`` is positive
semi-definite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from jaxtyping import Array, PyTree, Scalar

__all__ = [
    "OPTAX_KEYWORDS",
    "extra_args",
    "require_model_and_loss",
    "value_fn_of",
    "with_contract",
]

#: the contract's keywords that optax's own line searches understand
OPTAX_KEYWORDS = ("value", "grad", "value_fn")


def extra_args(
    model_fn: Callable[[PyTree[Array]], PyTree[Array]],
    loss_fn: Callable[[PyTree[Array]], Scalar],
    params: PyTree[Array],
    key: Array | None = None,
) -> tuple[Scalar, PyTree[Array], dict[str, Any]]:
    """The loss, its gradient and the contract's keyword arguments, for a plain optax loop.

    Returns ``(value, grads, kwargs)`` with ``kwargs`` ready for ``opt.update(grads, state,
    params, **kwargs)``. A complete loop with a Gauss-Newton optimizer::

        import optax
        from invphys import optim

        opt = optim.gauss_newton()
        state = opt.init(params)
        for x, y in batches:
            model_fn = lambda p: jax.vmap(lambda xi: apply(p, xi))(x)
            loss_fn = lambda out: 0.5 * jnp.mean((out - y) ** 2)
            value, grads, kw = optim.extra_args(model_fn, loss_fn, params, key)
            updates, state = opt.update(grads, state, params, **kw)
            params = optax.apply_updates(params, updates)

    The same loop runs ``optax.adam`` or ``optax.lbfgs`` unchanged.
    """
    value_fn = value_fn_of(model_fn, loss_fn)
    value, grads = jax.value_and_grad(value_fn)(params)
    kwargs = dict(model_fn=model_fn, loss_fn=loss_fn, value=value, grad=grads,
                  value_fn=value_fn, key=key)
    return value, grads, kwargs


def with_contract(
    transform: optax.GradientTransformation, keep: tuple[str, ...] = OPTAX_KEYWORDS
) -> optax.GradientTransformationExtraArgs:
    """``transform``, accepting the contract's keywords and forwarding only those in ``keep``.

    For optax transformations that reject unknown keywords (``optax.lbfgs``,
    ``optax.scale_by_zoom_linesearch``); a plain transformation gets extra-args support.
    """
    inner = optax.with_extra_args_support(transform)

    def update(updates, state, params=None, **extra):
        return inner.update(updates, state, params, **{k: extra[k] for k in keep if k in extra})

    return optax.GradientTransformationExtraArgs(inner.init, update)


def value_fn_of(model_fn: Callable, loss_fn: Callable) -> Callable[[PyTree[Array]], Scalar]:
    """The objective ``params -> loss_fn(model_fn(params))``."""
    return lambda p: loss_fn(model_fn(p))


def require_model_and_loss(extra: dict[str, Any], who: str) -> tuple[Callable, Callable]:
    """``(model_fn, loss_fn)`` from the extra arguments, or a ``TypeError`` naming the missing."""
    missing = [name for name in ("model_fn", "loss_fn") if extra.get(name) is None]
    if missing:
        raise TypeError(
            f"{who}.update needs the extra argument(s) {', '.join(missing)}=...: call it as "
            "opt.update(grads, state, params, model_fn=..., loss_fn=..., ...) "
            "(see invphys.optim's extra-args contract, or invphys.optim.extra_args)"
        )
    return extra["model_fn"], extra["loss_fn"]

"""A batched solve sharded across (fake CPU) devices, compacted or not, equals the
unsharded solve."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import invphys
    assert len(jax.devices()) == 4, jax.devices()
    A = jax.random.normal(jax.random.key(0), (9, 4))
    p = invphys.Problem(forward=lambda x: jnp.tanh(A @ x), lower=-1.0, upper=1.0, x_size=4)
    ys = jnp.tanh(jax.random.normal(jax.random.key(1), (10, 4)) @ A.T * 0.5)  # 10: padded to 12
    for method in ("gn", "lm"):
        plain = invphys.solve(p, ys, jnp.zeros(4), method=method)
        sharded = invphys.solve(p, ys, jnp.zeros(4), method=method, shard=True)
        assert sharded.x.shape == plain.x.shape == (10, 4)
        np.testing.assert_allclose(sharded.x, plain.x, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(sharded.steps, plain.steps)
        both = invphys.solve(p, ys, jnp.zeros(4), method=method, shard=True, compact=3)
        np.testing.assert_allclose(both.x, plain.x, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(both.steps, plain.steps)
    print("SHARDED-OK")
    """
)


def test_sharded_batch_equals_unsharded():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    import os

    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "SHARDED-OK" in out.stdout, out.stderr[-2000:]

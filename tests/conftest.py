"""Test configuration: float64 everywhere (enabled here, at the test entry point)."""

import jax

jax.config.update("jax_enable_x64", True)

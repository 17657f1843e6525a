"""Test configuration: float64 everywhere (enabled here, at the test entry point)."""

import os

import jax

jax.config.update("jax_enable_x64", True)

# the CLI's persistent compilation cache stays off in-process (tests that exercise it
# run the CLI in a subprocess with their own cache folder)
os.environ.setdefault("INVPHYS_NO_COMPILE_CACHE", "1")

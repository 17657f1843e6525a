"""CLI commands, one module each: ``register(subparsers)`` and ``run(args) -> int``."""

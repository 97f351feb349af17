"""Subcommands of ``baize-tui``; each module has ``register(subparsers)``."""

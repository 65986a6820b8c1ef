"""`pro` subcommand modules; each exposes ``register(subparsers)``."""

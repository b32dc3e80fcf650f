"""CLI subcommands. Each module exposes ``register(subparsers)`` and must stay light at import time
(no ray / mlflow / torch import at module level), so that ``blemore --help`` is instant."""

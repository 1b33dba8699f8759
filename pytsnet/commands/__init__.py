"""CLI subcommands: one module each, exposing ``register(subparsers)`` (see ``pytsnet.cli``)."""

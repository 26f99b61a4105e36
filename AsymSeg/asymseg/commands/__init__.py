"""Subcommands of the ``asymseg`` CLI: one module each, registered in ``asymseg.cli.COMMANDS``."""

"""The ``limefast`` command: ``commands`` (explain, compare and the subcommand registry) and
``inputs`` (images, models and the output folder, checked before any work)."""

from limefast.cli.commands import main

__all__ = ["main"]

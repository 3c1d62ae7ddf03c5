"""The application shell: the ``chatlog`` command line, the demo, the dev stack, log output.

It sits above every other layer (``pyproject.toml``'s import-linter contract
holds that). The click group is loaded on first access, so that tests and
benchmarks that only need :mod:`chatlog.cli.devstack` do not import click,
rich and every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatlog.cli.commands import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point (``chatlog``): typed chatlog errors exit 1 with their message."""
    from chatlog.cli.commands import main as run

    run()


def __getattr__(name: str) -> Any:
    if name == "cli":
        from chatlog.cli import commands

        return commands.cli
    raise AttributeError(f"module 'chatlog.cli' has no attribute {name!r}")

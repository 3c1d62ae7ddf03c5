"""Old home of the embedded dev stack, kept so ``chatlog.devstack.EmbeddedStack`` still imports.

The dev stack lives in the shell, :mod:`chatlog.cli.devstack`. This module
is outside the import-linter layers on purpose: it is a re-export for
existing code, and nothing in chatlog imports it.
"""

from __future__ import annotations

from chatlog.cli.devstack import (
    EmbeddedBroker,
    EmbeddedRedis,
    EmbeddedStack,
    free_port,
    redis_binary,
    tansu_binary,
    wait_for_port,
)

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "EmbeddedStack",
    "free_port",
    "redis_binary",
    "tansu_binary",
    "wait_for_port",
]

"""Old home of the embedded dev stack, kept so ``chatlog.devstack.EmbeddedStack`` still imports.

The dev stack lives in the shell, :mod:`chatlog.cli.devstack`. This module
is outside the import-linter layers on purpose: it is a re-export for
existing code, and nothing in chatlog imports it.
"""

from __future__ import annotations

from chatlog.cli.devstack import *  # noqa: F403 - the whole public API, re-exported
from chatlog.cli.devstack import __all__ as __all__

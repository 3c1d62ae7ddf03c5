"""Old home of the log formats, kept so ``chatlog.log_format.configure_logging`` still imports.

The formats live in the shell, :mod:`chatlog.cli.log_format`. This module is
outside the import-linter layers on purpose: it is a re-export for existing
code, and nothing in chatlog imports it.
"""

from __future__ import annotations

from chatlog.cli.log_format import *  # noqa: F403 - the whole public API, re-exported
from chatlog.cli.log_format import __all__ as __all__

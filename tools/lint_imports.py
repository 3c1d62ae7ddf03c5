"""Run import-linter's contracts (pyproject.toml) on chatlog as it is installed.

setuptools' ``package-dir`` installs the top-level folders ``schemas/``,
``projector/``, ... as ``chatlog.schemas``, ``chatlog.projector``, ...; an
editable install resolves them through an import hook, which grimp (the
graph under import-linter) does not consult: it walks the ``chatlog/``
folder and would see no sub-package at all. So this script asks the import
system where each installed ``chatlog.*`` package lives, links them into a
temporary tree shaped like the installed package, and runs ``lint-imports``
on that tree. Exit status is lint-imports' own.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _location(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_tree(target: Path) -> Path:
    """Link ``chatlog`` and every sub-package installed from elsewhere under ``target``."""
    base = _location("chatlog")
    if base is None:
        raise SystemExit("chatlog is not installed: pip install -e '.[dev]' first")
    tree = target / "chatlog"
    tree.mkdir()
    for entry in base.iterdir():
        (tree / entry.name).symlink_to(entry)
    for folder in sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()):
        where = _location(f"chatlog.{folder}")
        if where is not None and where.parent != base and not (tree / folder).exists():
            (tree / folder).symlink_to(where)
    return target


def main() -> int:
    """Build the tree, run lint-imports on it, return its exit status."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="chatlog-layers-") as tmp:
        tree = installed_tree(Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [str(lint_imports), str(ROOT / "pyproject.toml"), "--no-cache"]
        return subprocess.run(command, cwd=tree, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

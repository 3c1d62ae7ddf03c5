"""The card folders install as sub-packages of chatlog, in a built wheel and an editable install."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chatlog.projector.protocol import SCRIPT_CONSTANTS

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ["schemas", "producers", "projector", "histories"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_card_folders_import_as_chatlog_subpackages(name: str) -> None:
    """chatlog.<card> resolves to the top-level folder of the same name.

    ``chatlog/<card>`` is a link to that folder (so grimp and mypy, which walk
    ``chatlog/``, see the installed shape); the code is the top-level one.
    """
    module = importlib.import_module(f"chatlog.{name}")
    assert Path(module.__file__ or "").resolve().parent == ROOT / name
    assert (ROOT / "chatlog" / name).resolve() == ROOT / name


@pytest.mark.slow
def test_built_wheel_holds_subpackages_schemas_and_no_top_level_cards(tmp_path: Path) -> None:
    """A wheel built from the project files ships chatlog.* sub-packages, .avsc, .lua, py.typed."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("chatlog-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SUBPACKAGES:
        assert f"chatlog/{name}/__init__.py" in names
    assert "chatlog/schemas/avsc/chatlog.ChatEvent.v1.avsc" in names
    assert "chatlog/py.typed" in names
    for script in SCRIPT_CONSTANTS:
        assert f"chatlog/projector/{script}.lua" in names
    assert {"chatlog/cli/__init__.py", "chatlog/cli/__main__.py", "chatlog/devstack.py"} <= names
    top_level = {n.split("/")[0] for n in names if not n.startswith("chatlog-")}
    assert top_level == {"chatlog"}


def test_public_import_paths_survive_the_shell_move_and_stay_lazy() -> None:
    """README import paths work; chatlog and the projector import no LangChain or LangGraph."""
    probe = (
        "import sys\n"
        "import chatlog, chatlog.projector.worker, chatlog.cli.devstack\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in"
        " ('langchain_core', 'langchain', 'langgraph', 'click', 'rich')]\n"
        "assert not heavy, heavy\n"
        "from chatlog import ChatLog, ChatLogCheckpointSaver, Settings\n"
        "from chatlog.histories.checkpointer import ChatLogCheckpointSaver as Saver\n"
        "from chatlog.devstack import EmbeddedStack\n"
        "from chatlog.cli.devstack import EmbeddedStack as Stack\n"
        "from chatlog.log_format import configure_logging\n"
        "from chatlog.cli import cli, main\n"
        "assert ChatLogCheckpointSaver is Saver and EmbeddedStack is Stack\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=120)

"""The README's benchmark table is the rendering of the results file it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatlog.benchmarks.render import readme_block, readme_results, update_readme
from chatlog.benchmarks.report import BenchReport, Measure, Target
from chatlog.errors import ChatLogError

ROOT = Path(__file__).resolve().parents[2]


def test_readme_table_is_the_rendering_of_its_results_file() -> None:
    """Editing a figure by hand, or committing a results file without rendering it, fails here."""
    found = readme_results(ROOT / "README.md")
    assert found is not None, "the README has no benchmark block"
    results, block = found
    assert block == readme_block(results, ROOT)


def test_rendered_table_carries_commit_spread_and_raw_runs(tmp_path: Path) -> None:
    """A rendered row shows the medians, the ratio and its spread over the runs in the file."""
    report = BenchReport(quick=True, services="embedded", machine={"cpus": 2}, commit="abc123")
    report.add(Measure("add_messages of 10 messages", "msgs/s", 900.0, "raw producer", 1000.0,
                       Target("ratio_min", 0.8), "note", [[800.0, 1000.0], [1000.0, 1000.0]]))
    results = tmp_path / "results.json"
    report.write_json(results)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-table: begin results.json -->\nold\n"
                      "<!-- bench-table: end -->\nrest\n")
    update_readme(readme, results)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "commit `abc123`" in text and "QUICK" in text
    assert "| 0.90 x (0.80 x to 1.00 x over 2 runs) |" in text
    assert json.loads(results.read_text())["measures"][0]["runs"] == [[800.0, 1000.0],
                                                                      [1000.0, 1000.0]]


def test_results_outside_the_repository_are_refused(tmp_path: Path) -> None:
    """A table must name a file that can be committed beside the README."""
    readme = tmp_path / "repo" / "README.md"
    readme.parent.mkdir()
    readme.write_text("<!-- bench-table: begin x.json -->\n<!-- bench-table: end -->\n")
    with pytest.raises(ChatLogError, match="outside"):
        update_readme(readme, tmp_path / "elsewhere.json")

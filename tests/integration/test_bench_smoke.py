"""The quick benchmark runs end to end; figures are judged by people, never by tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatlog.cli import cli


@pytest.mark.slow
def test_quick_benchmark_reports_every_measure_with_its_baseline(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """`chatlog bench --quick` produces a number, and its baseline's, for every measure."""
    results = tmp_path / "bench.json"
    outcome = CliRunner().invoke(
        cli,
        ["bench", "--quick", "--no-embedded", "--json", str(results)],
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "REDIS_URL": redis_url},
        catch_exceptions=False,
    )
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(results.read_text())
    assert report["quick"] is True
    names = [m["name"] for m in report["measures"]]
    assert len(names) == 20 and len(set(names)) == 20
    for measure in report["measures"]:
        assert isinstance(measure["chatlog"], float) and math.isfinite(measure["chatlog"]), measure
        if measure["baseline_name"] is not None:
            assert isinstance(measure["baseline"], float) and math.isfinite(measure["baseline"]), (
                measure
            )
    assert "results written to" in outcome.output

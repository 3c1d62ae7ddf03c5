"""The quick benchmark runs end to end; figures are judged by people, never by tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatlog.cli import cli


@pytest.mark.slow
# Every section end to end (the Redis Cluster one starts a cluster of its own):
# about four minutes on a loaded 2-core machine, past the suite's default limit.
@pytest.mark.timeout(600)
def test_quick_benchmark_reports_every_measure_with_its_baseline(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """`chatlog bench --quick` gives every measure a positive figure and a same-run baseline."""
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
    assert report["commit"] and report["machine"]["cpus"] >= 1
    names = [m["name"] for m in report["measures"]]
    assert len(names) == 36 and len(set(names)) == 36
    for measure in report["measures"]:
        # Every row is chatlog next to a baseline measured in this same run,
        # with the raw per-run pairs the figures and the spread come from.
        for figure in (measure["chatlog"], measure["baseline"]):
            assert isinstance(figure, float) and math.isfinite(figure) and figure > 0, measure
        assert measure["baseline_name"], measure
        assert measure["runs"], measure
        for run in measure["runs"]:
            assert len(run) == 2 and all(v > 0 for v in run), measure
    assert "results written to" in outcome.output

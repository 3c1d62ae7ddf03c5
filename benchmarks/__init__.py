"""Reproducible performance runs: chatlog next to its baselines, measured in the same run.

Run ``chatlog bench [--quick] [--json PATH] [--readme README.md]`` or
``python -m benchmarks``; from Python, :func:`run_benchmarks` with
:meth:`BenchConfig.full` or :meth:`BenchConfig.smoke`. The README's table is
rendered from a committed results file by :mod:`chatlog.benchmarks.render`
(``--readme`` does it after the run), never typed in.
"""

from __future__ import annotations

from chatlog.benchmarks.config import BenchConfig
from chatlog.benchmarks.report import BenchReport, Measure, Target
from chatlog.benchmarks.runner import DEFAULT_RESULTS, run_benchmarks

__all__ = ["DEFAULT_RESULTS", "BenchConfig", "BenchReport", "Measure", "Target", "run_benchmarks"]

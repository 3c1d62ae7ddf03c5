"""Reproducible performance runs: chatlog next to its baselines, measured in the same run.

Run ``chatlog bench [--quick] [--json PATH]`` or ``python -m benchmarks``;
from Python, :func:`run_benchmarks` with :meth:`BenchConfig.full` or
:meth:`BenchConfig.smoke`.
"""

from __future__ import annotations

from chatlog.benchmarks.config import BenchConfig
from chatlog.benchmarks.report import BenchReport, Measure, Target
from chatlog.benchmarks.runner import DEFAULT_RESULTS, run_benchmarks

__all__ = ["DEFAULT_RESULTS", "BenchConfig", "BenchReport", "Measure", "Target", "run_benchmarks"]

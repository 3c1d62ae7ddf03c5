"""``python -m chatlog.benchmarks.wakeup_ab``: the own-writes step alone, wake-ups on and off.

Runs the full benchmark's read-your-writes and idle-projector measures
(:meth:`~chatlog.benchmarks.runner._Run.own_writes_of`) on both transports
with ``CHATLOG_WAKEUP`` on, then off, on one embedded stack in one run, and
writes them to ``benchmarks/results/wakeup-ab.json`` (with the commit).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from rich.console import Console

from chatlog.benchmarks.config import BenchConfig
from chatlog.benchmarks.report import BenchReport, git_commit, machine_facts
from chatlog.benchmarks.runner import DEFAULT_RESULTS, _Run, bench_settings

RESULTS = DEFAULT_RESULTS.with_name("wakeup-ab.json")


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run both transports with wake-ups on then off, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m chatlog.benchmarks.wakeup_ab")
    parser.add_argument("--samples", type=int, default=300, help="writes read back, per kind")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    config = dataclasses.replace(
        BenchConfig.full(), own_write_samples=options.samples, idle_seconds=options.idle_seconds
    )
    started = time.monotonic()
    with bench_settings(embedded=True) as (base, services):
        report = BenchReport(quick=False, services=services, machine=machine_facts(),
                             commit=git_commit())
        run = _Run(config, base, report, Console(stderr=True))
        try:
            for wakeup in (True, False):
                for transport in ("kafka-python", "confluent"):
                    mode = "on" if wakeup else "off"
                    settings = run.settings(f"ab-{mode}-{transport}").with_(
                        transport=transport, wakeup=wakeup
                    )
                    run.own_writes_of(settings, f" [{transport}, wake-ups {mode}]")
        finally:
            run.cleanup()
    report.seconds = time.monotonic() - started
    report.machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report.write_json(options.json)
    for m in report.measures:
        print(f"{m.name}: {m.chatlog:.2f} {m.unit} (baseline {m.baseline_name}: {m.baseline:.2f})")


if __name__ == "__main__":
    main()

"""Benchmark results: one :class:`Measure` per row, judged by its :class:`Target`.

A figure is only meaningful next to its baseline measured in the same run
on the same broker and Redis, so most targets are ratios
(``chatlog / baseline``); the rest are absolute bounds or only reported.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

TargetKind = Literal["ratio_min", "ratio_max", "value_max", "reported"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a measure must reach.

    ``ratio_min``/``ratio_max`` bound ``chatlog / baseline``; ``value_max``
    bounds the chatlog figure itself; ``reported`` sets no bound.
    """

    kind: TargetKind
    bound: float | None = None

    def describe(self) -> str:
        """The target as the table prints it."""
        if self.kind == "ratio_min":
            return f">= {self.bound:g} x"
        if self.kind == "ratio_max":
            return f"<= {self.bound:g} x"
        if self.kind == "value_max":
            return f"< {self.bound:g}"
        return "reported"


@dataclass(slots=True)
class Measure:
    """One row of the benchmark: chatlog's figure, its baseline and the target.

    Attributes:
        name: What is measured, with its unit.
        unit: Unit of ``chatlog`` and ``baseline`` (``events/s``, ``ms``, ``MB``).
        chatlog: chatlog's figure, ``None`` when it could not be measured.
        baseline_name: What the baseline is (``None`` for measures without one).
        baseline: The baseline's figure in the same run.
        target: The bound that decides ``met``.
        note: Sizes, samples, or why a figure is missing.
        runs: The raw figures behind ``chatlog`` and ``baseline``: one
            ``[chatlog, baseline]`` pair per repeated run or interleaved block
            of this run, so the spread can be traced to the same commit.
    """

    name: str
    unit: str
    chatlog: float | None
    baseline_name: str | None
    baseline: float | None
    target: Target
    note: str = ""
    runs: list[list[float | None]] = field(default_factory=list)

    @property
    def run_ratios(self) -> list[float]:
        """``chatlog / baseline`` of every run that measured both."""
        return [c / b for c, b in self.runs if c is not None and b]

    @property
    def spread(self) -> tuple[float, float] | None:
        """Lowest and highest per-run ratio (or chatlog figure when there is no baseline)."""
        values = self.run_ratios if self.baseline_name is not None else [
            c for c, _ in self.runs if c is not None
        ]
        return (min(values), max(values)) if len(values) > 1 else None

    @property
    def ratio(self) -> float | None:
        """``chatlog / baseline``: the median of the per-run ratios when there are several.

        Each run pairs chatlog with a baseline measured next to it, so the median
        of those pairs is less moved by load that came and went between runs
        than a ratio of two medians.
        """
        ratios = self.run_ratios
        if len(ratios) > 1:
            return statistics.median(ratios)
        if self.chatlog is None or self.baseline is None or self.baseline == 0:
            return None
        return self.chatlog / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether the target is met; ``None`` when only reported or not measurable."""
        kind, bound = self.target.kind, self.target.bound
        if kind == "reported" or bound is None:
            return None
        if kind == "value_max":
            return None if self.chatlog is None else self.chatlog < bound
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio >= bound if kind == "ratio_min" else ratio <= bound

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived ratio and verdict."""
        data = asdict(self)
        data["target"] = {"kind": self.target.kind, "bound": self.target.bound,
                          "text": self.target.describe()}
        data["ratio"] = self.ratio
        data["met"] = self.met
        data["spread"] = self.spread
        return data


@dataclass(slots=True)
class BenchReport:
    """Every measure of one run, with the machine and sizes it ran with."""

    quick: bool
    services: str
    measures: list[Measure] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    commit: str = ""

    def add(self, measure: Measure) -> Measure:
        """Append ``measure`` and return it."""
        self.measures.append(measure)
        return measure

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole run."""
        return {
            "quick": self.quick,
            "commit": self.commit,
            "services": self.services,
            "seconds": round(self.seconds, 1),
            "machine": self.machine,
            "measures": [m.to_dict() for m in self.measures],
        }

    def write_json(self, path: Path) -> None:
        """Write the run to ``path`` (parent folders are created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def _cells(self, m: Measure) -> tuple[str, str, str, str, str]:
        baseline = "—" if m.baseline_name is None else f"{_number(m.baseline)} ({m.baseline_name})"
        ratio = "—" if m.ratio is None else _ratio(m.ratio)
        spread = m.spread
        if spread is not None:
            low, high = spread
            within = f"{_ratio(low)} to {_ratio(high)}" if m.baseline_name is not None else (
                f"{_number(low)} to {_number(high)}"
            )
            ratio += f" ({within} over {len(m.runs)} runs)"
        return f"{m.name} [{m.unit}]", _number(m.chatlog), baseline, ratio, m.target.describe()

    def table(self) -> Table:
        """The run as a rich table: measure, chatlog, baseline, ratio, target, met?."""
        table = Table(title=f"chatlog benchmarks ({'quick' if self.quick else 'full'}, "
                      f"{self.services})")
        for column in ("measure", "chatlog", "baseline", "ratio", "target", "met?"):
            left = column in ("measure", "baseline")
            table.add_column(column, justify="left" if left else "right")
        for m in self.measures:
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[m.met]
            table.add_row(*self._cells(m), met)
        return table

    def markdown(self) -> str:
        """The run as a Markdown table (for the README), notes as a list below it."""
        lines = [
            "| measure | chatlog | baseline | ratio | target | met? |",
            "|---|---:|---|---:|---:|:---:|",
        ]
        for m in self.measures:
            met = {True: "yes", False: "**no**", None: "—"}[m.met]
            lines.append("| " + " | ".join((*self._cells(m), met)) + " |")
        lines.append("")
        notes: dict[str, list[str]] = {}
        for m in self.measures:
            if m.note:
                notes.setdefault(m.note, []).append(m.name)
        lines += [f"- {', '.join(names)}: {note}" for note, names in notes.items()]
        return "\n".join(lines) + "\n"

    def print(self, console: Console | None = None) -> None:
        """Print the table, the notes and the machine it ran on."""
        console = console or Console()
        console.print(self.table())
        for m in self.measures:
            if m.note:
                console.print(f"[dim]- {m.name}: {m.note}[/]")
        console.print(
            "machine: " + ", ".join(f"{k}={v}" for k, v in self.machine.items())
            + f"; run took {self.seconds:.1f}s"
        )


def _ratio(value: float) -> str:
    return f"{value:.2f} x" if value >= 0.01 else f"{value:.1e} x"


def median_pair(runs: list[list[float | None]]) -> tuple[float | None, float | None]:
    """Median chatlog figure and median baseline figure of ``runs``."""
    ours = [c for c, _ in runs if c is not None]
    theirs = [b for _, b in runs if b is not None]
    return (
        statistics.median(ours) if ours else None,
        statistics.median(theirs) if theirs else None,
    )


def git_commit() -> str:
    """The commit the benchmark code was run from, ``+dirty`` when the tree had changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def machine_facts() -> dict[str, Any]:
    """CPU count, memory and Python version of the machine running the benchmark."""
    facts: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    if hasattr(os, "getloadavg"):
        facts["load_average"] = [round(x, 2) for x in os.getloadavg()]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    facts["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    return facts


def load_report(path: Path) -> BenchReport:
    """Read a run written by :meth:`BenchReport.write_json` (to print or compare it)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    report = BenchReport(
        quick=data["quick"], services=data["services"], machine=data["machine"],
        seconds=data["seconds"], commit=data.get("commit", ""),
    )
    for m in data["measures"]:
        target = Target(m["target"]["kind"], m["target"]["bound"])
        report.add(Measure(
            m["name"], m["unit"], m["chatlog"], m["baseline_name"], m["baseline"], target,
            m["note"], m.get("runs", []),
        ))
    return report

"""Benchmark results: one :class:`Measure` per row, judged by its :class:`Target`.

A figure is only meaningful next to its baseline measured in the same run
on the same broker and Redis, so most targets are ratios
(``chatlog / baseline``); the rest are absolute bounds or only reported.
"""

from __future__ import annotations

import json
import platform
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
    """

    name: str
    unit: str
    chatlog: float | None
    baseline_name: str | None
    baseline: float | None
    target: Target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """``chatlog / baseline`` when both were measured."""
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
        return data


@dataclass(slots=True)
class BenchReport:
    """Every measure of one run, with the machine and sizes it ran with."""

    quick: bool
    services: str
    measures: list[Measure] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, measure: Measure) -> Measure:
        """Append ``measure`` and return it."""
        self.measures.append(measure)
        return measure

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole run."""
        return {
            "quick": self.quick,
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
        ratio = "—" if m.ratio is None else (
            f"{m.ratio:.2f} x" if m.ratio >= 0.01 else f"{m.ratio:.1e} x"
        )
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


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def machine_facts() -> dict[str, Any]:
    """CPU count, memory and Python version of the machine running the benchmark."""
    import os

    facts: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
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
        seconds=data["seconds"],
    )
    for m in data["measures"]:
        target = Target(m["target"]["kind"], m["target"]["bound"])
        report.add(Measure(
            m["name"], m["unit"], m["chatlog"], m["baseline_name"], m["baseline"], target,
            m["note"],
        ))
    return report

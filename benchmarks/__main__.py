"""``python -m benchmarks [--quick] [--json PATH]``: the same run as ``chatlog bench``."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from chatlog.benchmarks.config import BenchConfig
from chatlog.benchmarks.render import update_readme
from chatlog.benchmarks.runner import DEFAULT_RESULTS, run_benchmarks


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the benchmarks, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes (CI smoke run)")
    parser.add_argument("--json", type=Path, default=DEFAULT_RESULTS, help="where to write results")
    parser.add_argument("--readme", type=Path, help="also render the results into this README")
    options = parser.parse_args(argv)
    config = BenchConfig.smoke() if options.quick else BenchConfig.full()
    report = run_benchmarks(config, json_path=options.json)
    report.print(Console())
    print(f"results written to {options.json}")
    if options.readme is not None:
        update_readme(options.readme, options.json)
        print(f"benchmark table of {options.readme} rendered from them")


if __name__ == "__main__":
    main()

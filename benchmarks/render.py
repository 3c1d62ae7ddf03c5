"""The README's benchmark table, rendered from a committed results file so the two cannot drift.

``python -m chatlog.benchmarks.render RESULTS [README]`` prints the table of
``RESULTS`` (a file ``chatlog bench --json`` wrote), or, given a README,
replaces the block between :data:`BEGIN` and :data:`END` with it. The block
names its results file; ``tests/unit/test_bench_render.py`` checks that the
README's block is exactly the rendering of that file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from chatlog.benchmarks.report import BenchReport, load_report
from chatlog.errors import ChatLogError

BEGIN = "<!-- bench-table: begin"
END = "<!-- bench-table: end -->"

_BLOCK = re.compile(re.escape(BEGIN) + r" (?P<path>\S+) -->\n.*?" + re.escape(END), re.DOTALL)


def render(report: BenchReport, source: str) -> str:
    """The Markdown table of ``report`` with the facts a reader needs to trust it."""
    machine = report.machine
    facts = ", ".join(f"{key} {value}" for key, value in machine.items())
    kind = "QUICK smoke sizes: not figures to quote" if report.quick else "full sizes"
    return (
        f"Results file `{source}` ({kind}): commit `{report.commit or 'unknown'}`, "
        f"{report.services}, {facts}; the run took {report.seconds:.0f}s. Each ratio is "
        "chatlog / baseline, both measured in that run: the median of the per-run ratios, "
        "with their lowest to highest over the repeated runs (throughput) or interleaved "
        "blocks of samples (latency), all of that commit; the figures are medians of the "
        "runs, or percentiles of all samples. Raw per-run figures are in the results "
        "file.\n\n"
        + report.markdown()
    )


#: The block's body while its results file does not exist: no figures at all.
NOT_YET_RUN = (
    "No full run of this commit has been stored yet: run the command above on a quiet "
    "machine and commit the results file with the README.\n"
)


def readme_block(results: Path, root: Path) -> str:
    """The whole README block (markers included) for ``results``, named relative to ``root``.

    While ``results`` does not exist the block says so instead of showing figures.

    Raises:
        ChatLogError: ``results`` is not inside ``root``.
    """
    try:
        source = results.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ChatLogError(
            f"the results file {results} is outside {root}: write it inside the repository "
            "(e.g. benchmarks/results/full.json) so it is committed beside the README"
        ) from None
    body = render(load_report(results), source) if results.exists() else NOT_YET_RUN
    return f"{BEGIN} {source} -->\n{body}{END}"


def update_readme(readme: Path, results: Path) -> None:
    """Replace the README's benchmark block with the table of ``results``.

    Raises:
        ChatLogError: the README has no benchmark block to replace.
    """
    text = readme.read_text(encoding="utf-8")
    block = readme_block(results, readme.parent)
    updated, count = _BLOCK.subn(lambda _m: block, text)
    if count != 1:
        raise ChatLogError(
            f"{readme} has {count} benchmark blocks; expected one between "
            f"'{BEGIN} <results file> -->' and '{END}'"
        )
    readme.write_text(updated, encoding="utf-8")


def readme_results(readme: Path) -> tuple[Path, str] | None:
    """The results file the README's block names and the block itself, if it has one."""
    found = _BLOCK.search(readme.read_text(encoding="utf-8"))
    if found is None:
        return None
    return readme.parent / found.group("path"), found.group(0)


def main(argv: list[str] | None = None) -> None:
    """Print the table of a results file, or write it into a README."""
    parser = argparse.ArgumentParser(prog="python -m chatlog.benchmarks.render",
                                     description=__doc__)
    parser.add_argument("results", type=Path, help="a results file written by chatlog bench")
    parser.add_argument("readme", type=Path, nargs="?", help="README whose block to replace")
    options = parser.parse_args(argv)
    if options.readme is None:
        print(render(load_report(options.results), options.results.as_posix()))
    else:
        update_readme(options.readme, options.results)
        print(f"{options.readme}: benchmark table rendered from {options.results}")


if __name__ == "__main__":
    main()

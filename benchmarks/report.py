"""Results JSON -> docs/benchmarks.md (tables), its plots (PNG, when matplotlib is installed) and the
README's benchmark block.

`python -m benchmarks.report [RESULTS.json] [--docs docs/benchmarks.md]` regenerates the page from a
stored result (default: the latest full run in benchmarks/results/) without measuring anything, and
with it the README's benchmark block. Ratios between systems of the same run are the headline;
absolute seconds belong to the machine named at the top.

The work is split by kind: report_metrics.py derives the numbers, report_markdown.py writes the
page's sections, report_plots.py draws the plots and readme_block.py the README's block; this module
reads the results file (results_file.py: the current schema only) and writes the files.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

from . import readme_block
from .report_markdown import render_markdown
from .report_plots import render_plots
from .results_file import read_results


def render(
    results: dict[str, Any],
    results_file: Path,
    docs_path: Path,
    readme: Path | None = None,
    per_cpu_folders: tuple[Path, ...] = (),
) -> Path:
    """Write the page and its plots; with ``readme``, also rewrite that README's benchmark block. Both
    get the ratios of each CPU kind's latest run in ``per_cpu_folders`` (the repository's results)."""
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    plots = render_plots(results, docs_path.parent / docs_path.stem)
    relative_plots = [os.path.relpath(plot, docs_path.parent) for plot in plots]
    source_name = readme_block.source_name(results_file)
    per_cpu = readme_block.per_cpu_entries(docs_path, per_cpu_folders) if per_cpu_folders else None
    docs_path.write_text(render_markdown(results, source_name, relative_plots, per_cpu), encoding="utf-8")
    if readme is not None:
        block = readme_block.render_block(
            results,
            source_name,
            readme_block.plot_for(readme, docs_path),
            readme_block.per_cpu_entries(readme, per_cpu_folders) if per_cpu_folders else None,
        )
        readme_block.update_readme(readme, block)
    return docs_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Regenerate the benchmark page (and the README's block) from a results file.",
    )
    parser.add_argument(
        "results", type=Path, nargs="?", help="a results file [default: the latest full run in benchmarks/results/]"
    )
    parser.add_argument("--docs", type=Path, default=readme_block.DOCS_PAGE)
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="README whose benchmark block to rewrite [default: the repository's README.md, when the "
        "page is docs/benchmarks.md and the results are a full run's]",
    )
    parser.add_argument("--no-readme", action="store_true", help="leave every README alone")
    args = parser.parse_args(argv)
    if args.docs.resolve() == readme_block.DOCS_PAGE and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(
            "matplotlib is not installed here, and docs/benchmarks.md needs its plots: run "
            "`python -m benchmarks report`, which renders in the harness environment"
        )
    results_file = args.results or readme_block.latest_results_file()
    results = read_results(results_file)
    readme = args.readme
    whole_run = results["mode"] == "full" and not results["settings"].get("only")
    if readme is None and args.docs.resolve() == readme_block.DOCS_PAGE and whole_run:
        readme = readme_block.README
    if args.no_readme:
        readme = None
    repository_page = args.docs.resolve() == readme_block.DOCS_PAGE
    print(render(results, results_file, args.docs, readme, readme_block.RESULT_FOLDERS if repository_page else ()))
    if readme is not None:
        print(readme)


if __name__ == "__main__":
    main()

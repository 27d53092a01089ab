"""`python -m benchmarks`: measure everything and regenerate docs/benchmarks.md.

python -m benchmarks                 # the full run (real-size model; about 36 min from nothing on a 2-CPU Zen 4)
python -m benchmarks --headline      # only the interleaved headline comparisons: results/headline/
python -m benchmarks --quick         # tiny model, current environment only; checks the harness
python -m benchmarks report [RESULTS]  # regenerate the page, its plots and the README's benchmark
                                       # block from a results file (default: the latest); measures nothing
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import report
from .results_file import write_results
from .run import REPO_ROOT, Benchmark, Log, Settings, results_path
from .systems import BY_KEY, HEADLINE_KEYS

HEADLINE_PAGE = REPO_ROOT / "docs" / "benchmarks-headline.md"
QUICK_SIZE = 256  # the tiny model at 512 spends most of the quick run in torch's f32 VAE; size rows scale alike


def parse_settings(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model, systems installed here, no new environments"
    )
    parser.add_argument("--source", help="real weights: a hub id (needs internet) or a local diffusers folder")
    parser.add_argument("--only", default="", help=f"comma-separated measurements: {', '.join(BY_KEY)}")
    parser.add_argument(
        "--headline",
        action="store_true",
        help="only the interleaved headline comparisons (a CPU kind's ratios for the README, ~20 min of "
        "measuring); results in results/headline/, page docs/benchmarks-headline.md",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="warm runs per system after the warm-up (default 3; measurements "
        "with their own smaller count in systems.py run that)",
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the --quantize-unet int8 export and its run")
    parser.add_argument(
        "--full",
        action="store_true",
        help="also the 768x768, 1024x1024 and 4-images-per-call rows, and what each piece of --fast "
        "is worth alone (four more exports)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build the environments, the model and its bundles, then stop (no measurement)",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the model folder and re-export the bundles")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per process (default 900)")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=Settings.budget_minutes,
        help="skip measurements not started within this many minutes of the first one, so that measuring "
        "stays under 40 minutes; building the environments and bundles comes first, once (default %(default)s)",
    )
    parser.add_argument("--work-dir", type=Path, default=Settings.work_dir, help="scratch (venvs, model, logs)")
    parser.add_argument("--results-dir", type=Path, default=Settings.results_dir)
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="page to write [default: docs/benchmarks.md; with --quick, WORK_DIR/quick/benchmarks.md]",
    )
    parser.add_argument("--machine", help="name for results/<machine>-<UTC time>.json [default: from the CPU]")
    args = parser.parse_args(argv)
    only = list(HEADLINE_KEYS) if args.headline else [key for key in args.only.split(",") if key]
    if args.docs:
        docs = args.docs
    elif args.quick:
        docs = args.work_dir / "quick" / "benchmarks.md"
    elif only:  # a partial run never rewrites the full run's page (nor the README's block)
        docs = HEADLINE_PAGE if set(HEADLINE_KEYS) <= set(only) else args.work_dir / "checks" / "benchmarks.md"
    else:
        docs = Settings.docs_path
    size = QUICK_SIZE if args.quick else Settings.height
    return Settings(
        quick=args.quick,
        height=size,
        width=size,
        source=args.source,
        work_dir=args.work_dir,
        results_dir=args.results_dir,
        docs_path=docs,
        only=only,
        runs=args.runs,
        timeout=args.timeout,
        budget_minutes=args.budget_minutes,
        rebuild=args.rebuild,
        prepare_only=args.prepare_only,
        int8=not args.no_int8,
        full=args.full,
        machine=args.machine,
    )


def render_report(benchmark: Benchmark, settings: Settings, results_file: Path) -> None:
    if settings.quick:
        report.render(benchmark.results, results_file, settings.docs_path)  # plots only if matplotlib is here
        return
    # matplotlib lives in the harness environment, not in the project's.
    python = benchmark.python_for("harness")
    subprocess.run(
        [python, "-m", "benchmarks.report", str(results_file), "--docs", str(settings.docs_path)],
        cwd=REPO_ROOT,
        check=True,
    )


def report_only(args: list[str]) -> None:
    """`python -m benchmarks report ...`: benchmarks.report in an environment with matplotlib (the
    harness's, built once, like a full run does), so that the plots are drawn too."""
    try:
        import matplotlib  # noqa: F401

        report.main(args)
        return
    except ImportError:
        pass
    from .venvs import ENVIRONMENTS, ensure_environment

    python = ensure_environment(ENVIRONMENTS["harness"], Settings.work_dir / "venvs")
    # From the caller's folder, so that relative paths mean what they meant; benchmarks/ from the repository.
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run([str(python), "-m", "benchmarks.report", *args], env=env)
    if completed.returncode != 0:
        raise SystemExit(completed.returncode)  # the report said why on stderr, in one line


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["report"]:
        report_only(args[1:])
        return
    settings = parse_settings(args)
    log = Log()
    benchmark = Benchmark(settings, log)
    results = benchmark.run()
    if settings.prepare_only:
        log("prepared: " + ", ".join(f"{kind} {entry['path']}" for kind, entry in results["model"]["bundles"].items()))
        return
    results_file = results_path(settings, results)
    write_results(results, results_file)
    log(f"results: {results_file}")
    render_report(benchmark, settings, results_file)
    log(f"page: {settings.docs_path}")


if __name__ == "__main__":
    main()

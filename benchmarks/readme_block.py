"""The README's benchmark block: headline numbers from the latest results file, never typed by hand.

README.md holds a block between ``START`` and ``END``. ``python -m benchmarks report`` (and every full
run) rewrites it from the same results file as docs/benchmarks.md; tests/benchmarks/test_readme_block.py
fails when the README's block is not the one the latest results file renders (a hand edit, or a
new results file without a regenerated README).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from .machine import cpu_name, machine_slug
from .report_metrics import (
    GIB,
    at_main_shape,
    cold_start_over_warm,
    decodes_with_taesd,
    latency,
    latency_ratio,
    ok_runs,
    paired_ratio,
    ratio,
    runs_deep_cache,
    taesd_name,
)
from .results_file import read_results
from .systems import BASELINE, F32_BASELINE, GENAI_BASELINE, INT8_UNET_BUNDLES

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"  # full runs only: checks/ holds partial ones
# Runs of only the headline rows (`--only`, interleaved), for a CPU kind whose full run is older or absent.
HEADLINE_DIR = RESULTS_DIR / "headline"
RESULT_FOLDERS = (RESULTS_DIR, HEADLINE_DIR)  # where the ratios per CPU come from
README = REPO_ROOT / "README.md"
DOCS_PAGE = REPO_ROOT / "docs" / "benchmarks.md"
START = "<!-- benchmark:start -->"
END = "<!-- benchmark:end -->"
HEADLINE_PLOT = "headline.png"  # the block's plot, also at the top of the page (report_plots.py draws it)

# The README's rows, by measurement key (systems.py), in order: (key, name, compared with openvino.genai).
# The compared ones are also the headline plot's bars. Keys a results file lacks are left out.
HEADLINE_ROWS: tuple[tuple[str, str, bool], ...] = (
    (BASELINE, "**lcm-run** (defaults)", True),
    ("lcm-run-fast", "**lcm-run `--fast`**", True),
    ("lcm-run-fast-deep-cache", "**lcm-run `--fast --deep-cache 2`**", True),
    (GENAI_BASELINE, "openvino.genai", True),
    ("optimum", "optimum-intel", True),
    ("diffusers-bf16", "diffusers (torch)", True),
    (F32_BASELINE, "**lcm-run** f32: diffusers' exact image", False),
    ("diffusers-f32", "diffusers (torch)", False),
)
CLI_START = "filled cache"  # the cold start the README quotes: lcm-run's CLI, defaults, compile cache filled


def results_date(results: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(results.get("date")))
    except ValueError:
        return None


def latest_results_file(folder: Path = RESULTS_DIR) -> Path:
    """The full run that started last, by the date inside each file (not the name: machines differ)."""
    dated = []
    for path in folder.glob("*.json"):
        results = json.loads(path.read_text(encoding="utf-8"))
        date = results_date(results)
        if results.get("mode") == "full" and not results.get("settings", {}).get("only") and date is not None:
            dated.append((date, path.name, path))
    if not dated:
        raise FileNotFoundError(f"no results file of a full run in {folder}")
    return max(dated)[2]


def latest_per_cpu(folders: tuple[Path, ...] = RESULT_FOLDERS) -> list[tuple[Path, dict[str, Any]]]:
    """The latest run (full, or of the headline rows) on each kind of CPU (``machine_slug``: model,
    AMX or not, CPU count), newest first: the README states the ratios of every CPU measured."""
    latest: dict[str, tuple[datetime, Path, dict[str, Any]]] = {}
    for folder in folders:
        for path in folder.glob("*.json"):
            results = read_results(path)
            date = results_date(results)
            if results.get("mode") != "full" or date is None:
                continue
            kind = machine_slug(results["machine"])
            if kind not in latest or latest[kind][0] < date:
                latest[kind] = (date, path, results)
    return [
        (path, results) for _date, path, results in sorted(latest.values(), key=lambda entry: entry[0], reverse=True)
    ]


# The per-CPU table's columns: (heading, lcm-run's measurement, compared with).
PER_CPU_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("lcm-run × genai", BASELINE, GENAI_BASELINE),
    ("`--fast` × genai", "lcm-run-fast", GENAI_BASELINE),
    ("f32 × genai reshaped f32", F32_BASELINE, "genai-reshape-f32"),
)


def cpu_text(machine: dict[str, Any]) -> str:
    flags = machine["flags"]
    kind = "AMX" if flags.get("amx_bf16") else "avx512_bf16, no AMX" if flags.get("avx512_bf16") else "no bf16"
    name = re.sub(r"\((R|TM)\)| Processor| CPU\b|@.*", "", cpu_name(machine)).strip() or cpu_name(machine)
    return f"{name} ({kind}, {machine['usable_cpus']} CPUs)"


def per_cpu_lines(entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One row per CPU kind: lcm-run's headline ratios from that CPU's latest run, with their range
    where the systems took turns (an older run measured them apart: a plain ratio)."""
    lines = [
        "| CPU | Run | " + " | ".join(heading for heading, _key, _other in PER_CPU_COLUMNS) + " | Peak RSS × genai |",
        "|---|---|" + "---|" * (len(PER_CPU_COLUMNS) + 1),
    ]
    for name, results in entries:
        runs = {run["key"]: run for run in ok_runs(results) if at_main_shape(results, run)}
        cells = [
            ratio_with_spread(runs[key], runs[other]) if key in runs and other in runs else times(None)
            for _heading, key, other in PER_CPU_COLUMNS
        ]
        rss = (
            times(runs[BASELINE]["process"]["peak_rss_bytes"] / runs[GENAI_BASELINE]["process"]["peak_rss_bytes"])
            if BASELINE in runs and GENAI_BASELINE in runs
            else times(None)
        )
        date = results_date(results)
        when = date.strftime("%Y-%m-%d") if date else str(results["date"])
        lines.append(f"| {cpu_text(results['machine'])} | [{when}]({name}) | " + " | ".join([*cells, rss]) + " |")
    return lines


def headline_runs(results: dict[str, Any], compared_only: bool = False) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, run, compared with openvino.genai) for each headline row the results have."""
    runs = {run["key"]: run for run in ok_runs(results) if at_main_shape(results, run)}
    return [
        (name, runs[key], compared)
        for key, name, compared in HEADLINE_ROWS
        if key in runs and (compared or not compared_only)
    ]


def what_ran(results: dict[str, Any], run: dict[str, Any]) -> str:
    precisions = sorted(set(run["worker"]["precision_executed"].values()))
    parts = (
        (["INT8 UNet"] if run["model"] in INT8_UNET_BUNDLES else [])
        + ([taesd_name(results, run)] if decodes_with_taesd(run) else [])
        + (["DeepCache"] if runs_deep_cache(run) else [])
    )
    return ", ".join(parts + ["/".join(precisions) or run["precision"]])


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def machine_text(results: dict[str, Any]) -> str:
    machine = results["machine"]
    flags = machine["flags"]
    extras = ["virtual machine"] if machine["hypervisor"] else []
    extras += ["AMX"] if flags.get("amx_bf16") else ["avx512_bf16"] if flags.get("avx512_bf16") else []
    memory = machine["memory_bytes"]  # None when /proc/meminfo could not be read
    extras += [f"{memory / GIB:.0f} GiB RAM"] if memory else []
    version = str(results["openvino_version"] or "unknown").split("-")[0]  # None when the matmul peak failed
    return f"{cpu_name(machine)} ({machine['usable_cpus']} CPUs, {', '.join(extras)}), OpenVINO {version}"


def render_block(
    results: dict[str, Any],
    source_name: str,
    plot: str | None,
    per_cpu: list[tuple[str, dict[str, Any]]] | None = None,
) -> str:
    """The block, markers included: the plot, the headline table, lcm-run's CLI start and, given
    ``per_cpu`` ((README-relative file, results) of each CPU kind's latest run), the ratios per CPU."""
    settings, model = results["settings"], results["model"]
    genai = {run["key"]: run for run in ok_runs(results)}.get(GENAI_BASELINE)
    date = results_date(results)
    when = date.strftime("%Y-%m-%d %H:%M UTC") if date else str(results["date"])
    lines = [START, f"<!-- Generated by `python -m benchmarks report` from {source_name}. Do not edit by hand. -->", ""]
    if plot:
        lines += [f"![Latency and peak memory per image, lcm-run against its peers]({plot})", ""]
    weights = "random weights" if "random" in str(model["weights"]) else f"{model['weights']} weights"
    lines += [
        f"Run of {when} on {machine_text(results)}: model `{model['name']}` ({weights}), "
        f"{settings['width']}x{settings['height']}, {settings['steps']} steps, one image per call; warm latency "
        f"(median of {settings['runs']}) and peak RSS of the whole process."
        + (
            " Systems resident side by side took turns image by image; their × is the median of the per-round "
            "ratios, with its range."
            if any(run.get("interleaved_with") for run in ok_runs(results))
            else ""
        ),
        "",
    ]
    lines += [
        "| System | Ran at | Latency | × openvino.genai | Peak RSS | × openvino.genai |",
        "|---|---|---|---|---|---|",
    ]
    for name, run, compared in headline_runs(results):
        rss = run["process"]["peak_rss_bytes"]
        against = compared and genai is not None
        lines.append(
            f"| {name} | {what_ran(results, run)} | {seconds(latency(run)['median'])} | "
            f"{ratio_with_spread(run, genai) if against else times(None)} | {rss / GIB:.2f} GiB | "
            f"{times(rss / genai['process']['peak_rss_bytes'] if against else None)} |"
        )
    notes = []
    fast = {run["key"]: run for run in ok_runs(results)}.get("lcm-run-fast")
    fast_ratio = ratio(results, fast) if fast else None
    if fast_ratio:
        notes.append(f"`--fast` takes {fast_ratio:.2f}× the default's time.")
    start = next(
        (entry for entry in results["cold_start"] if entry["name"] == CLI_START and entry["status"] == "ok"),
        None,
    )
    if start and start["process"]["first_png_seconds"]:
        over = cold_start_over_warm(results, start)
        notes.append(
            f"The `lcm-run` CLI with a filled compile cache takes "
            f"{seconds(start['process']['first_png_seconds'])} from start to PNG"
            + (f" ({over:+.1f} s over warm)" if over is not None else "")
            + f", peak {start['process']['peak_rss_bytes'] / GIB:.2f} GiB; `lcm-run serve` pays that start once."
        )
    notes.append("Seconds are this machine's only; every measurement: [docs/benchmarks.md](docs/benchmarks.md).")
    lines += ["", " ".join(notes)]
    if per_cpu:
        lines += [
            "",
            "Each CPU's latest run (a range: the rounds of systems taking turns):",
            "",
            *per_cpu_lines(per_cpu),
        ]
    lines.append(END)
    return "\n".join(lines)


def ratio_with_spread(run: dict[str, Any], other: dict[str, Any]) -> str:
    """``run``'s latency over ``other``'s: "0.88× (0.86–0.90)", the median of the rounds in which they took
    turns and their range; a plain ratio of medians for runs measured apart."""
    paired = paired_ratio(run, other)
    if paired is None or run is other:
        return times(latency_ratio(run, other))
    return f"{paired['median']:.2f}× ({paired['low']:.2f}–{paired['high']:.2f})"


def plot_for(readme: Path, docs_path: Path) -> str:
    """The headline plot's path from the README's folder (the page's plots live in docs/benchmarks/)."""
    return Path(os.path.relpath(docs_path.parent / docs_path.stem / HEADLINE_PLOT, readme.parent)).as_posix()


def read_block(text: str) -> str:
    """The block in a README's text, markers included."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"the README must hold one benchmark block: a line {START}, then a line {END}")
    return text[text.index(START) : text.index(END) + len(END)]


def update_readme(readme: Path, block: str) -> bool:
    """Replace the README's block (markers included) with ``block``; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    updated = text.replace(read_block(text), block)
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
    return updated != text


def expected_block(results_file: Path | None = None, readme: Path = README, docs_path: Path = DOCS_PAGE) -> str:
    """The block a results file (default: the latest) renders for this README."""
    results_file = results_file or latest_results_file()
    results = read_results(results_file)
    return render_block(results, source_name(results_file), plot_for(readme, docs_path), per_cpu_entries(readme))


def per_cpu_entries(page: Path, folders: tuple[Path, ...] = RESULT_FOLDERS) -> list[tuple[str, dict[str, Any]]]:
    """``latest_per_cpu`` with each file named relative to ``page``'s folder, for its links."""
    return [(Path(os.path.relpath(path, page.parent)).as_posix(), results) for path, results in latest_per_cpu(folders)]


def source_name(results_file: Path) -> str:
    try:
        return Path(results_file).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return Path(results_file).name

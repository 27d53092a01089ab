"""The page's plots (PNG, drawn with matplotlib when it is installed): the headline (the README's
rows against openvino.genai), the warm latency of every run, and where each run's time goes.

Only runs at the benchmarked size with one image per call are drawn: one size on one axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .machine import cpu_name
from .readme_block import HEADLINE_PLOT, headline_runs, what_ran
from .readme_block import seconds as seconds_text
from .report_metrics import GIB, at_main_shape, latency, median_stages, ok_runs, precision_label

DPI = 110


def render_plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Writes the plots into ``folder``; their paths, headline first (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    runs = [run for run in ok_runs(results) if at_main_shape(results, run)]
    if not runs:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{run['label']}\n{precision_label(results, run)}" for run in runs]
    written = [render_headline_plot(results, folder, plt), render_latency_plot(results, runs, names, folder, plt)]
    written.append(render_stages_plot(runs, names, folder, plt))
    return [plot for plot in written if plot]


def save(figure: Any, path: Path, plt: Any) -> Path:
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def render_headline_plot(results: dict[str, Any], folder: Path, plt: Any) -> Path | None:
    """The README's rows compared with openvino.genai: latency and peak memory side by side."""
    rows = headline_runs(results, compared_only=True)
    if not rows:
        return None
    names = [f"{name.replace('*', '').replace('`', '')}\n{what_ran(results, run)}" for name, run, _compared in rows]
    colors = ["tab:green" if run["system"] == "lcm-run" else "tab:gray" for _name, run, _compared in rows]
    columns = (
        ("seconds per image (median)", [latency(run)["median"] for _n, run, _c in rows], seconds_text),
        (
            "peak RSS, GiB",
            [run["process"]["peak_rss_bytes"] / GIB for _n, run, _c in rows],
            lambda value: f"{value:.2f} GiB",
        ),
    )
    figure, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(rows) + 1.4), sharey=True)
    for axis, (label, values, text) in zip(axes, columns, strict=True):
        axis.barh(names, values, color=colors)
        for index, value in enumerate(values):
            axis.text(value, index, " " + text(value), va="center", fontsize=8)
        axis.set_xlim(0, max(values) * 1.3)
        axis.set_xlabel(label)
        axis.tick_params(axis="y", labelsize=8)
        axis.spines[["top", "right"]].set_visible(False)
    axes[0].invert_yaxis()
    settings, machine = results["settings"], results["machine"]
    figure.suptitle(
        f"{settings['width']}x{settings['height']}, {settings['steps']} steps: "
        f"{cpu_name(machine)}, {machine['usable_cpus']} CPUs (run {str(results['date'])[:10]})",
        fontsize=10,
    )
    figure.tight_layout()
    return save(figure, folder / HEADLINE_PLOT, plt)


def render_latency_plot(
    results: dict[str, Any], runs: list[dict[str, Any]], names: list[str], folder: Path, plt: Any
) -> Path:
    """Every run's median warm latency, with its min-max as error bars; lcm-run's in green."""
    stats = [latency(run) for run in runs]
    figure, axes = plt.subplots(figsize=(9, 0.55 * len(runs) + 1.5))
    medians = [s["median"] for s in stats]
    errors = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
    colors = ["tab:green" if run["system"] == "lcm-run" else "tab:gray" for run in runs]
    axes.barh(names, medians, xerr=errors, color=colors, capsize=3)
    axes.invert_yaxis()
    settings, machine = results["settings"], results["machine"]
    axes.set_xlabel(
        f"seconds per {settings['width']}x{settings['height']} image ({settings['steps']} steps), median, min–max"
    )
    axes.set_title(f"Warm latency — {cpu_name(machine)}, {machine['usable_cpus']} CPUs")
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    return save(figure, folder / "latency.png", plt)


def render_stages_plot(runs: list[dict[str, Any]], names: list[str], folder: Path, plt: Any) -> Path | None:
    """Text encoder, UNet and VAE decode of each run that reports its stages, stacked; the rest of
    the latency (scheduler, pre- and post-processing) in gray."""
    staged = [
        (name, median_stages(run), latency(run)["median"])
        for name, run in zip(names, runs, strict=True)
        if median_stages(run)
    ]
    if not staged:
        return None
    figure, axes = plt.subplots(figsize=(9, 0.55 * len(staged) + 2.0))
    left = [0.0] * len(staged)
    for stage, color in (("text_encoder", "tab:blue"), ("unet_total", "tab:orange"), ("vae_decode", "tab:purple")):
        widths = [stages.get(stage, 0.0) for _name, stages, _total in staged]
        axes.barh([name for name, _s, _t in staged], widths, left=left, color=color, label=stage.replace("_", " "))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    other = [max(total - used, 0.0) for (_name, _stages, total), used in zip(staged, left, strict=True)]
    axes.barh(
        [name for name, _s, _t in staged],
        other,
        left=left,
        color="lightgray",
        label="other (scheduler, pre/post-processing)",
    )
    axes.invert_yaxis()
    axes.set_xlabel("seconds (medians of the warm runs)")
    axes.set_title("Where the time goes")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    return save(figure, folder / "stages.png", plt)

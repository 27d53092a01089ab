"""Numbers derived from a results dict (the current schema, results_file.py): latencies, ratios,
medians per stage, bounds from the FLOP counts and the matmul peak, and which runs compare.

No formatting here: report_markdown.py, report_plots.py and readme_block.py turn these into text
and pictures.
"""

from __future__ import annotations

import statistics
from typing import Any

from .systems import BASELINE, F32_BASELINE, GENAI_BASELINE, INT8_UNET_BUNDLES

GIB = 2**30
# Above this share of the CPUs used by other processes during a measurement, the report flags it.
BUSY_SHARE = 0.05


def ok_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [run for run in results["runs"] if run["status"] == "ok"]


def run_shape(run: dict[str, Any]) -> tuple[int, int, int]:
    """(height, width, images per call)."""
    return run["height"], run["width"], run["batch"]


def at_main_shape(results: dict[str, Any], run: dict[str, Any]) -> bool:
    """At the benchmarked size, one image per call: the only runs the headline, the ratios, the bounds
    and the plots compare (FLOPs are counted at that size; a batch's latency is not an image's)."""
    settings = results["settings"]
    return run_shape(run) == (settings["height"], settings["width"], 1)


def size_text(run: dict[str, Any]) -> str:
    height, width, _batch = run_shape(run)
    return f"{width}x{height}"


def latency(run: dict[str, Any]) -> dict[str, float]:
    values = run["worker"]["latencies_seconds"]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def decodes_with_taesd(run: dict[str, Any]) -> bool:
    return run["model"] == "bundle-taesd" or run["variant"] in ("fast", "fast-deep-cache", "tiny-vae")


def taesd_name(results: dict[str, Any], run: dict[str, Any]) -> str:
    """ "INT8 TAESD" when the run's bundle recorded a quantized decoder (lcm-export --quantize-tiny-vae)."""
    bundle = results.get("model", {}).get("bundles", {}).get(run["model"], {})
    # lcm_runtime.bundle.INT8_PTQ, spelled out: the report renders where lcm_runtime may not be installed.
    return "INT8 TAESD" if bundle.get("tiny_vae_precision") == "int8-ptq" else "TAESD"


def runs_deep_cache(run: dict[str, Any]) -> bool:
    return str(run["variant"]).endswith("deep-cache")


def unet_step_flops(results: dict[str, Any], run: dict[str, Any]) -> int | None:
    """One step's FLOPs in the run's bundle: with token downsampling, those of the downsampled UNet
    (fewer keys in the full-resolution self-attentions), counted like the others. None when the
    FLOP count failed, and for DeepCache, whose steps between full ones run a fraction of them."""
    flops = results.get("flops")
    if not flops or runs_deep_cache(run):
        return None
    factor = results["model"]["bundles"][run["model"]]["token_downsampling"]
    return flops["unet_step"] if factor == 1 else flops[f"unet_step_token_downsampling_{factor}"]


def precision_label(results: dict[str, Any], run: dict[str, Any]) -> str:
    """What actually ran, and whether it was asked for or the library's default."""
    text = "/".join(sorted(set(run["worker"]["precision_executed"].values()))) or run["precision"]
    if run["model"] in INT8_UNET_BUNDLES:
        text = f"int8 UNet, {text}"
    if decodes_with_taesd(run):
        text = f"{taesd_name(results, run)} decoder, {text}"
    if runs_deep_cache(run):
        text = f"DeepCache, {text}"
    return text if run["precision"] != "default" else f"{text} (default)"


def median_stages(run: dict[str, Any]) -> dict[str, Any]:
    """Median over the warm runs of each stage; the UNet as the median step and the sum of steps.
    A worker reports the stages it could time (openvino.genai's metrics can be missing: None)."""
    stages = [stage for stage in run["worker"]["stages"] if stage]
    if not stages:
        return {}
    result: dict[str, Any] = {}
    for name in ("text_encoder", "vae_decode", "compile"):
        values = [stage[name] for stage in stages if isinstance(stage.get(name), (int, float))]
        if values:
            result[name] = statistics.median(values)
    steps = [stage["unet"] for stage in stages if isinstance(stage.get("unet"), list) and stage["unet"]]
    if steps:
        result["unet_step"] = statistics.median([step for run_steps in steps for step in run_steps])
        result["unet_total"] = statistics.median([sum(run_steps) for run_steps in steps])
        # Step by step: the first step of a run can differ (caches, input binding).
        result["unet_each"] = [statistics.median(column) for column in zip(*steps, strict=False)]
    result["png_write"] = run["worker"]["png_write_seconds"]
    return result


def peak_for(results: dict[str, Any], precision: str) -> float | None:
    """The measured matmul peak in GOP/s at a precision; None when it was not measured."""
    matmul = results.get("matmul")
    return matmul["peak_gops"].get(precision) if matmul else None


def stage_precision(run: dict[str, Any], stage: str) -> str:
    executed = run["worker"]["precision_executed"]
    component = {"text_encoder": "text_encoder", "unet_step": "unet", "vae_decode": "vae_decoder"}[stage]
    if stage == "unet_step" and run["model"] in INT8_UNET_BUNDLES:
        return "int8"
    # lcm-run reports each component; openvino.genai, optimum-intel and torch one precision for "all".
    value = executed.get(component) or executed.get("all") or "f32"
    return "bf16" if "bf16" in value else "f16" if "f16" in value else "f32"


def bound_rows(results: dict[str, Any], run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each lcm-run stage against the time the machine's measured matmul peak allows."""
    counted = results.get("flops")
    if not counted:
        return []
    flops = {
        "text_encoder": counted["text_encoder"],
        "unet_step": unet_step_flops(results, run),
        "vae_decode": None if decodes_with_taesd(run) else counted["vae_decode"],
    }  # the count is the full VAE's
    stages = median_stages(run)
    rows = []
    for stage in ("text_encoder", "unet_step", "vae_decode"):
        if stage not in stages or not flops[stage]:
            continue
        precision = stage_precision(run, stage)
        peak = peak_for(results, precision)
        bound = flops[stage] / (peak * 1e9) if peak else None
        rows.append(
            {
                "stage": stage,
                "seconds": stages[stage],
                "flops": flops[stage],
                "precision": precision,
                "peak_gops": peak,
                "bound_seconds": bound,
                "achieved_gops": flops[stage] / stages[stage] / 1e9 if stages[stage] else None,
                "fraction_of_peak": bound / stages[stage] if bound and stages[stage] else None,
            }
        )
    if len(rows) == 3:
        # The whole image: every stage's bound added up, against the measured prompt-to-image median.
        steps = results["settings"]["steps"]
        measured = latency(run)["median"]
        work = sum(row["flops"] * (steps if row["stage"] == "unet_step" else 1) for row in rows)
        bound = sum(
            row["bound_seconds"] * (steps if row["stage"] == "unet_step" else 1) for row in rows if row["bound_seconds"]
        )
        rows.append(
            {
                "stage": "whole_image",
                "seconds": measured,
                "flops": work,
                "precision": "as above",
                "peak_gops": None,
                "bound_seconds": bound or None,
                "achieved_gops": work / measured / 1e9,
                "fraction_of_peak": bound / measured if bound else None,
            }
        )
    return rows


def paired_ratio(run: dict[str, Any], other: dict[str, Any]) -> dict[str, Any] | None:
    """For two runs measured interleaved (run.py: measure_interleaved), ``run``'s timed image over
    ``other``'s round by round: their median, lowest and highest, and each. None for runs measured
    apart, whose ratio is only the ratio of their medians, drift included."""
    if other["key"] not in run.get("interleaved_with", ()):
        return None
    mine, theirs = run["worker"]["latencies_seconds"], other["worker"]["latencies_seconds"]
    if not mine or len(mine) != len(theirs):
        return None
    rounds = [one / two for one, two in zip(mine, theirs, strict=True)]
    return {"median": statistics.median(rounds), "low": min(rounds), "high": max(rounds), "rounds": rounds}


def latency_ratio(run: dict[str, Any], other: dict[str, Any]) -> float:
    """``run``'s latency over ``other``'s: the median of the per-round ratios when they were measured
    interleaved, else the ratio of the medians."""
    paired = paired_ratio(run, other)
    return paired["median"] if paired else latency(run)["median"] / latency(other)["median"]


def ratio(results: dict[str, Any], run: dict[str, Any]) -> float | None:
    """The run's latency over lcm-run's at a comparable precision (>1: lcm-run is faster);
    None for other sizes and batches, which have tables of their own."""
    if not at_main_shape(results, run):
        return None
    runs = {entry["key"]: entry for entry in ok_runs(results)}
    baseline_key = F32_BASELINE if run["precision"] == "f32" else BASELINE
    baseline = runs.get(baseline_key)
    if baseline is None:
        return None
    return 1.0 if run["key"] == baseline_key else latency_ratio(run, baseline)


def genai_ratios(results: dict[str, Any], run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's latency and peak RSS over openvino.genai's default measurement (<1: the run does
    better), with the per-round spread (``latency_rounds``) when they were measured interleaved;
    only at default precision and the benchmarked size, like that measurement."""
    genai = {entry["key"]: entry for entry in ok_runs(results)}.get(GENAI_BASELINE)
    if genai is None or run["precision"] != "default" or not at_main_shape(results, run):
        return None
    return {
        "latency": latency_ratio(run, genai),
        "latency_rounds": paired_ratio(run, genai),
        "peak_rss": run["process"]["peak_rss_bytes"] / genai["process"]["peak_rss_bytes"],
    }


def unet_over_int8_bound(results: dict[str, Any], run: dict[str, Any]) -> float | None:
    """The median UNet step over the time one step's FLOPs take at the int8 MatMul peak: the fastest
    this CPU multiplies, whatever precision the step ran in (1 would be the machine's limit)."""
    flops = unet_step_flops(results, run)
    peak = peak_for(results, "int8")
    step = median_stages(run).get("unet_step")
    if not (flops and peak and step) or not at_main_shape(results, run):
        return None
    return step / (flops / (peak * 1e9))


def one_image_counterpart(results: dict[str, Any], run: dict[str, Any]) -> dict[str, Any] | None:
    """The first ok run of the same system, bundle and precision at the same size, one image per call,
    default variant: what a batch is compared with."""
    height, width, _batch = run_shape(run)
    for entry in ok_runs(results):
        same = (entry["system"], entry["model"], entry["precision"]) == (run["system"], run["model"], run["precision"])
        if same and entry["variant"] == "default" and run_shape(entry) == (height, width, 1):
            return entry
    return None


def default_runs_by_size(results: dict[str, Any], system: str) -> dict[tuple[int, int], dict[str, Any]]:
    """A system's ok runs at its defaults (FP16 bundle, default precision and variant, one image per
    call), by (width, height): the memory-by-size rows."""
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for run in ok_runs(results):
        height, width, batch = run_shape(run)
        if (run["system"], run["model"], run["precision"], run["variant"], batch) == (
            system,
            "bundle",
            "default",
            "default",
            1,
        ):
            found.setdefault((width, height), run)
    return found


def cold_start_over_warm(results: dict[str, Any], entry: dict[str, Any]) -> float | None:
    """A CLI start's spawn-to-PNG seconds minus the warm latency of the measurement it is compared
    with (its ``reference``), when both exist."""
    warm = {run["key"]: latency(run)["median"] for run in ok_runs(results) if at_main_shape(results, run)}
    first_png, reference = entry["process"]["first_png_seconds"], warm.get(entry["reference"])
    if first_png is None or reference is None or entry["status"] != "ok":
        return None
    return first_png - reference


def disturbed_runs(results: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    """(run, share of the machine's CPU time other processes used) for each run above BUSY_SHARE;
    runs skipped before they started have no process."""
    shares = [(run, (run.get("process") or {}).get("others_share") or 0) for run in results["runs"]]
    return [(run, share) for run, share in shares if share > BUSY_SHARE]

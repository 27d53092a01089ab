"""Brings results files of schema 1 to the current schema (results_file.py), in place; run once.

python -m benchmarks.convert_results           # every file in benchmarks/results/ and results/checks/
python -m benchmarks.convert_results FILE ...  # these files

Schema 1 covers every harness before the schema was bumped, so a file may lack any field added while
it grew; each is filled with what the harness of the time did (the report's former fallbacks, now
made once here and written down):

- a run without ``height``, ``width``, ``batch`` or ``timed_runs`` ran at the settings' size, one
  image per call, ``settings.runs`` timed calls; an ok run without ``deviation_from_f32`` has no
  comparison (None), one without ``worker.images_per_call`` made one image per call;
- ``bundle-int8`` (before ``--fast`` existed: an INT8-quantized UNet) is ``bundle-fast``, the kind the
  report knows has one (the bundle's path keeps its folder's name);
- a bundle without ``token_downsampling`` pooled by 2 if it is ``bundle-todo`` or ``bundle-one-shot``
  (``--token-downsampling 2``), or ``bundle-fast`` made after ``--fast`` began to include token
  downsampling by 2; by 1 otherwise. The FLOPs of a downsampled UNet step, which those runs did not
  count, come from flops.json, the harness's store for the same architecture and size;
- a cold start without ``reference`` is compared with ``lcm-run-fast`` if its name starts with
  ``--fast``, else with ``lcm-run``; without ``first_png_runs`` it was a single start.

A file already at the current schema is left byte for byte as it is.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from .results_file import RESULTS_SCHEMA, write_results
from .systems import BASELINE, BUNDLE_FAST, BUNDLE_ONE_SHOT, BUNDLE_TODO, DEVIATION_FIELD

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FLOPS_STORE = Path(__file__).resolve().parent / "flops.json"
OLD_INT8_BUNDLE = "bundle-int8"
# lcm-export's --fast includes --token-downsampling 2 from commit 69de985 on; bundles exported with
# --token-downsampling were always given 2 by the harness.
FAST_TOKEN_DOWNSAMPLING_SINCE = datetime.datetime(2026, 11, 26, 1, 21, 37, tzinfo=datetime.timezone.utc)
TOKEN_DOWNSAMPLING = 2
DOWNSAMPLED_STEP = "unet_step_token_downsampling_"


def committed_files(folder: Path = RESULTS_DIR) -> list[Path]:
    return sorted([*folder.glob("*.json"), *(folder / "checks").glob("*.json")])


def convert(results: dict[str, Any], flops_store: Path = FLOPS_STORE) -> dict[str, Any]:
    """The results at the current schema (a new dict; the same one when already current)."""
    if results.get("schema") == RESULTS_SCHEMA:
        return results
    if results.get("schema") != 1:
        raise ValueError(f"results schema {results.get('schema')}: only schema 1 converts to {RESULTS_SCHEMA}")
    results = json.loads(json.dumps(results))  # a deep copy
    settings = results["settings"]
    for run in results["runs"]:
        run.setdefault("height", settings["height"])
        run.setdefault("width", settings["width"])
        run.setdefault("batch", 1)
        run.setdefault("timed_runs", settings["runs"])
        if run["model"] == OLD_INT8_BUNDLE:
            run["model"] = BUNDLE_FAST
        if run["status"] == "ok":
            run.setdefault(DEVIATION_FIELD, None)
            run["worker"].setdefault("images_per_call", 1)
    bundles = results["model"]["bundles"]
    if OLD_INT8_BUNDLE in bundles:
        if BUNDLE_FAST in bundles:
            raise ValueError(f"both {OLD_INT8_BUNDLE} and {BUNDLE_FAST}: cannot rename one to the other")
        bundles[BUNDLE_FAST] = bundles.pop(OLD_INT8_BUNDLE)
    started = datetime.datetime.fromisoformat(results["date"])
    for kind, bundle in bundles.items():
        downsampled = kind in (BUNDLE_TODO, BUNDLE_ONE_SHOT) or (
            kind == BUNDLE_FAST and started >= FAST_TOKEN_DOWNSAMPLING_SINCE
        )
        bundle.setdefault("token_downsampling", TOKEN_DOWNSAMPLING if downsampled else 1)
    if results.get("flops"):
        add_downsampled_flops(results, flops_store)
    for entry in results["cold_start"]:
        entry.setdefault("reference", "lcm-run-fast" if entry["name"].startswith("--fast") else BASELINE)
        entry.setdefault("first_png_runs", [entry["process"]["first_png_seconds"]])
    results["schema"] = RESULTS_SCHEMA
    return results


def add_downsampled_flops(results: dict[str, Any], flops_store: Path) -> None:
    """The downsampled UNet steps' counts from the store, for the same architecture (configs digest)
    and size, once the counts both have agree."""
    flops, settings = results["flops"], results["settings"]
    factors = {bundle["token_downsampling"] for bundle in results["model"]["bundles"].values()} - {1}
    if all(f"{DOWNSAMPLED_STEP}{factor}" in flops for factor in factors):
        return
    key = f"{results['model'].get('configs_digest')}@{settings['height']}x{settings['width']}"
    stored = json.loads(flops_store.read_text(encoding="utf-8")).get(key)
    if stored is None or any(stored.get(name) != count for name, count in flops.items()):
        raise ValueError(f"no FLOP count in {flops_store.name} for {key} that agrees with the results' own")
    flops.update({name: count for name, count in stored.items() if name.startswith(DOWNSAMPLED_STEP)})
    missing = [factor for factor in factors if f"{DOWNSAMPLED_STEP}{factor}" not in flops]
    if missing:
        raise ValueError(f"{flops_store.name} has no UNet step count for token downsampling {missing}")


def convert_file(path: Path) -> bool:
    """Converts one file in place; True when it changed."""
    results = json.loads(path.read_text(encoding="utf-8"))
    converted = convert(results)
    if converted is results:
        return False
    write_results(converted, path)
    return True


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for path in [Path(arg) for arg in args] or committed_files():
        try:
            changed = convert_file(path)
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"{path}: cannot convert: {error}") from None
        print(f"{path}: {'converted to' if changed else 'already at'} schema {RESULTS_SCHEMA}")


if __name__ == "__main__":
    main()

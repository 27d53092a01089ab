"""How fast a fresh process gets a compiled model from a filled cache, by each way OpenVINO offers.

    python -m benchmarks.import_modes BUNDLE [--component unet] [--rounds 3] [--size 512]

Each trial is a new process: import OpenVINO, get the compiled model, run it twice. The modes take turns
round by round (this VM drifts), every cache is filled once before the first round, and the table gives
the median of the rounds (docs/performance.md, "Cold start"):

- ``index``: lcm-run's own path (runtime/lcm_runtime/compile_cache.py): the blob OpenVINO wrote, imported
  from a read-only mapping without reading or hashing the IR.
- ``index-read``: the same blob read into memory first instead of mapped.
- ``ov-cache``: OpenVINO's CACHE_DIR as documented: read the IR, reshape, compile_model (a cache hit
  hashes the whole model, weights included).
- ``ov-cache-size``: CACHE_DIR with CACHE_MODE=OPTIMIZE_SIZE: the blob leaves the weights out, and a hit
  takes them from the IR's .bin.
- ``weightless-import``: that weightless blob imported directly with WEIGHTS_PATH set to the .bin,
  skipping the IR read and the hash as ``index`` does.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("index", "index-read", "ov-cache", "ov-cache-size", "weightless-import")


def shapes_for(component: str, size: int) -> dict[str, list[int]]:
    """Static input shapes at this image size (-1 keeps the IR's own dimension)."""
    latent = size // 8
    if component == "unet":
        return {"sample": [1, -1, latent, latent], "timestep": [1], "encoder_hidden_states": [1, 77, -1],
                "timestep_cond": [1, -1]}  # fmt: skip
    if component in ("vae_decoder", "vae_decoder_tiny"):
        return {"latent_sample": [1, -1, latent, latent]}
    if component == "text_encoder":
        return {"input_ids": [1, 77]}
    raise SystemExit(f"unknown component {component!r}")


def child(mode: str, xml: Path, cache: Path, size: int, component: str, spawned: float) -> dict[str, Any]:
    started = time.perf_counter()
    import numpy as np

    from lcm_runtime.compile_cache import HEADER_LIMIT, CompileCache, plugin_stream_offset
    from lcm_runtime.models import CompiledComponent, _static_shapes
    from lcm_runtime.openvino_runtime import ov

    core = ov.Core()
    imported = time.perf_counter()
    shapes = shapes_for(component, size)
    folder = cache / mode

    read_blobs: list[Any] = []  # the imported model keeps reading constants in place: they must outlive it

    def plugin_stream(blob: Path) -> Any:
        """The plugin's part of a cache blob, read into one writable array (OpenVINO takes no other)."""
        data = np.fromfile(blob, dtype=np.uint8)
        offset = plugin_stream_offset(bytes(data[:HEADER_LIMIT]))
        assert offset is not None, f"{blob}: unknown blob header"
        read_blobs.append(data)
        return ov.Tensor(data[offset:], shared_memory=True)

    def read_reshaped() -> Any:
        model = core.read_model(str(xml))
        model.reshape(_static_shapes(model, shapes))
        return model

    if mode == "index":
        core.set_property({"CACHE_DIR": str(folder)})  # as lcm-run does: the index sits over OpenVINO's cache
        component_model = CompiledComponent(core, xml, shapes, "CPU", {}, CompileCache(folder))  # owns the mapping
        compiled = component_model.compiled
    elif mode == "index-read":  # the index's only blob, read into memory instead of mapped
        (blob,) = (cache / "index").glob("*.blob")
        compiled = core.import_model(plugin_stream(blob), "CPU", {})
    elif mode in ("ov-cache", "ov-cache-size"):
        config = {"CACHE_DIR": str(folder)}
        if mode == "ov-cache-size":
            config["CACHE_MODE"] = "OPTIMIZE_SIZE"
        compiled = core.compile_model(read_reshaped(), "CPU", config)
    elif mode == "weightless-import":
        (blob,) = (cache / "ov-cache-size").glob("*.blob")
        compiled = core.import_model(plugin_stream(blob), "CPU", {"WEIGHTS_PATH": str(xml.with_suffix(".bin"))})
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    ready = time.perf_counter()
    spawn_to_ready = time.time() - spawned
    request = compiled.create_infer_request()
    for port in compiled.inputs:
        shape = list(port.get_shape())
        dtype = port.get_element_type().to_dtype()
        value = np.full(shape, 1, dtype) if dtype.kind in "iu" else np.random.default_rng(0).standard_normal(shape)
        request.set_tensor(port, ov.Tensor(np.ascontiguousarray(value, dtype)))
    request.infer()
    first = time.perf_counter()
    request.infer()
    second = time.perf_counter()
    output = request.get_output_tensor(0).data
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "spawn_to_ready_seconds": spawn_to_ready,
        "import_seconds": imported - started,
        "compiled_seconds": ready - imported,
        "first_infer_seconds": first - ready,
        "warm_infer_seconds": second - first,
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "user_cpu_seconds": usage.ru_utime,
        "system_cpu_seconds": usage.ru_stime,
        "output_checksum": float(np.abs(output.astype(np.float64)).sum()),
        "blob_bytes": sum(path.stat().st_size for path in folder.glob("*.blob")) if folder.is_dir() else None,
    }


def run_child(mode: str, xml: Path, cache: Path, size: int, component: str) -> dict[str, Any]:
    spawned = str(time.time())  # the child's clock: the same machine's
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.import_modes",
            "--child",
            mode,
            str(xml),
            str(cache),
            str(size),
            component,
            spawned,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],  # where `-m benchmarks` imports from
    )
    if completed.returncode != 0:  # the error's last line, as OpenVINO words it
        return {"failed": (completed.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--child":
        mode, xml, cache, size, component, spawned = args[1:7]
        print(json.dumps(child(mode, Path(xml), Path(cache), int(size), component, float(spawned))))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_modes", description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--component", default="unet", help="unet, vae_decoder, vae_decoder_tiny or text_encoder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, help="write every trial as JSON here")
    options = parser.parse_args(args)
    xml = options.bundle / options.component / "openvino_model.xml"
    if not xml.is_file():
        raise SystemExit(f"{xml} does not exist")
    modes = options.modes.split(",")
    cache = Path(tempfile.mkdtemp(prefix="import-modes-"))
    try:
        # Fill every cache first: index-read imports the index's blob, weightless-import OPTIMIZE_SIZE's.
        for mode in ["index", "ov-cache-size"] + (["ov-cache"] if "ov-cache" in modes else []):
            run_child(mode, xml, cache, options.size, options.component)
        trials: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for round_index in range(options.rounds):
            order = modes if round_index % 2 == 0 else modes[::-1]
            for mode in order:
                trials[mode].append(run_child(mode, xml, cache, options.size, options.component))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    keys = ("spawn_to_ready_seconds", "compiled_seconds", "first_infer_seconds", "warm_infer_seconds",
            "peak_rss_gib", "user_cpu_seconds", "system_cpu_seconds")  # fmt: skip
    print(f"{options.component} of {options.bundle} at {options.size}x{options.size}, {options.rounds} rounds "
          "(median; compiled = getting the compiled model after `import openvino`)")  # fmt: skip
    print("| mode | " + " | ".join(key.replace("_seconds", " s").replace("_", " ") for key in keys) + " | blob |")
    print("|---" * (len(keys) + 2) + "|")
    for mode in modes:
        failed = next((trial["failed"] for trial in trials[mode] if "failed" in trial), None)
        if failed:
            print(f"| {mode} | failed: {failed} |")
            continue
        medians = [statistics.median(trial[key] for trial in trials[mode]) for key in keys]
        blob = trials[mode][0]["blob_bytes"]
        blob_text = f"{blob / 2**20:.0f} MiB" if blob else ""
        print(f"| {mode} | " + " | ".join(f"{value:.2f}" for value in medians) + f" | {blob_text} |")
    sums = {mode: sorted({trial.get("output_checksum", 0.0) for trial in trials[mode]}) for mode in modes}
    print("output checksums per mode (equal outputs have equal sums):", json.dumps(sums))
    if options.out:
        options.out.write_text(json.dumps({"options": {k: str(v) for k, v in vars(options).items()}, "trials": trials}))


if __name__ == "__main__":
    main()

"""The whole benchmark, in order: machine, environments, model and bundles, FLOPs, matmul peak,
lcm-run's cold start, every system in its own fresh process, then the results file and the report.

Every step that can fail records its error and the run goes on: a peer that breaks is a result
("failed: ..."), not a reason to lose the other forty minutes of measurements.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import flops as flop_store
from .deviation import attach_deviations
from .machine import machine_facts, machine_slug
from .measure import ProcessResult, machine_busy_seconds, run_measured
from .model import MODEL_NAME, configs_digest, lcm_lora_path
from .results_file import RESULTS_SCHEMA
from .systems import (
    BASELINE,
    BUNDLE,
    BUNDLE_BF16,
    BUNDLE_CFG,
    BUNDLE_DEEP_CACHE,
    BUNDLE_FAST,
    BUNDLE_ONE_SHOT,
    BUNDLE_TAESD,
    BUNDLE_TODO,
    F32_BASELINE,
    HEADLINE_KEYS,
    SOURCE,
    Measurement,
    available_here,
    measurement_groups,
    select,
)
from .venvs import ENVIRONMENTS, ensure_environment, installed_size

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
WORKERS = PACKAGE_DIR / "workers"
FILLED_CACHE_STARTS = 3  # the median of three: a single start moves by ~0.5 s on this VM


@dataclass
class Settings:
    quick: bool = False
    source: str | None = None  # hub id or diffusers folder with real weights; None builds random weights
    work_dir: Path = PACKAGE_DIR / ".work"
    results_dir: Path = PACKAGE_DIR / "results"
    docs_path: Path = REPO_ROOT / "docs" / "benchmarks.md"
    only: list[str] = field(default_factory=list)
    runs: int = 3
    height: int = 512
    width: int = 512
    steps: int = 4
    guidance: float = 8.0
    seed: int = 0
    prompt: str = "a photo of an astronaut riding a horse on mars"
    timeout: float = 900.0  # per process
    # Measurements not started this many minutes after the first one are skipped, so that measuring stays
    # under 40 minutes; building the environments and bundles comes before (once: later runs reuse them).
    budget_minutes: float = 32.0
    rebuild: bool = False
    prepare_only: bool = False
    int8: bool = True
    full: bool = False  # also the rows marked full_only (sizes, batches)
    machine: str | None = None


class Log:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}", flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("PYTHONPATH", None)  # a worker sees only its own environment
    env.update(extra or {})
    return env


class Resident:
    """A worker that stays loaded and makes each timed image when told: the --pace protocol of
    workers/common.py, its process run (and measured) in a thread of the harness."""

    def __init__(self, out_dir: Path, pace: Path) -> None:
        self.out_dir, self.pace = out_dir, pace
        self.outcome: dict[str, ProcessResult] = {}
        self.thread: threading.Thread | None = None

    def start(self, command: list[str], log: Path, timeout: float) -> None:
        self.thread = threading.Thread(
            target=lambda: self.outcome.update(
                result=run_measured(command, log, timeout, env=child_env(), first_png=self.out_dir / "first.png")
            ),
            daemon=True,
        )
        self.thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Until it has loaded and made its first image (True), or it ended or timed out first."""
        assert self.thread is not None
        return wait_for_file(self.pace / "ready", self.thread, timeout)

    def turn(self, index: int, timeout: float) -> bool:
        """Timed image ``index`` made now (True), or the worker stopped or timed out first (False)."""
        assert self.thread is not None
        (self.pace / f"go-{index}").touch()
        return wait_for_file(self.pace / f"done-{index}", self.thread, timeout)

    def release(self) -> None:
        """Let it exit (it has written its result; a resident frees its memory only when told)."""
        (self.pace / "exit").touch()

    def result(self) -> ProcessResult:
        assert self.thread is not None
        self.thread.join()
        return self.outcome["result"]


class Benchmark:
    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.log = log
        mode = "quick" if settings.quick else "full"
        self.scratch = settings.work_dir / mode
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.pythons: dict[str, str] = {}
        self.started = time.perf_counter()
        self.measuring_started: float | None = None  # after the environments and bundles: the budget's start
        self.results: dict[str, Any] = {
            "schema": RESULTS_SCHEMA,
            "mode": mode,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": {
                key: settings.__dict__[key]
                for key in ("runs", "height", "width", "steps", "guidance", "seed", "prompt", "only")
            },
            "errors": [],
        }

    # -- environments -------------------------------------------------------------------------
    def python_for(self, environment: str) -> str:
        if self.settings.quick:
            return sys.executable  # --quick never builds environments: it uses what is installed here
        if environment not in self.pythons:
            venvs_dir = self.settings.work_dir / "venvs"
            self.pythons[environment] = str(ensure_environment(ENVIRONMENTS[environment], venvs_dir, self.log))
            self.results.setdefault("environments", {})[environment] = {
                "installed_bytes": installed_size(venvs_dir / environment),
                "requirements": ENVIRONMENTS[environment].requirements,
            }
        return self.pythons[environment]

    def lcm_run_command(self) -> str:
        return str(Path(self.python_for("lcm-runtime")).parent / "lcm-run")

    def wants(self, measurement: Measurement) -> bool:
        """A full_only row runs only with --full (or --quick, or named by --only)."""
        settings = self.settings
        return not measurement.full_only or settings.full or settings.quick or measurement.key in settings.only

    def to_measure(self) -> list[Measurement]:
        """The selected measurements this run makes, so that a default run neither exports a --full
        row's bundle nor builds its environment."""
        return [measurement for measurement in select(self.settings.only) if self.wants(measurement)]

    # -- model ----------------------------------------------------------------------------------
    def prepare_model(self) -> dict[str, Path]:
        settings = self.settings
        if settings.quick:
            name = "tiny"
        elif settings.source:  # real weights: bundles of different sources must never share a folder
            name = (
                "source-"
                + hashlib.sha256(
                    str(
                        Path(settings.source).absolute() if Path(settings.source).exists() else settings.source
                    ).encode()
                ).hexdigest()[:12]
            )
        else:
            name = f"{configs_digest()}-seed{settings.seed}"
        model_dir = self.scratch / name
        if settings.rebuild or settings.quick:
            shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        source = self.source_folder(model_dir)
        wanted = {measurement.model for measurement in self.to_measure()}
        # --fast's factor, so that the rows compare. Imported here: the report renders in the harness
        # environment, which has no lcm_export.
        from lcm_export.options import FAST_TOKEN_DOWNSAMPLING

        todo = ["--token-downsampling", str(FAST_TOKEN_DOWNSAMPLING)]
        exports: dict[str, tuple[Path, list[str]]] = {BUNDLE: (source, [])}  # kind: (source folder, options)
        if wanted & {BUNDLE_TAESD, BUNDLE_ONE_SHOT, BUNDLE_FAST}:
            tiny_vae = ["--tiny-vae", str(self.taesd_folder(model_dir))]
        if BUNDLE_TAESD in wanted:
            exports[BUNDLE_TAESD] = (source, tiny_vae)
        if BUNDLE_TODO in wanted:
            exports[BUNDLE_TODO] = (source, todo)
        if BUNDLE_ONE_SHOT in wanted:
            exports[BUNDLE_ONE_SHOT] = (source, ["--weights", "bf16", *todo, *tiny_vae, "--quantize-tiny-vae", "int8"])
        if BUNDLE_BF16 in wanted:
            exports[BUNDLE_BF16] = (source, ["--weights", "bf16"])
        if BUNDLE_DEEP_CACHE in wanted and not settings.quick:
            exports[BUNDLE_DEEP_CACHE] = (source, ["--deep-cache"])
        elif BUNDLE_DEEP_CACHE in wanted:  # --quick checks the harness: one tiny export less
            exports[BUNDLE] = (source, ["--deep-cache"])
        if BUNDLE_CFG in wanted:
            sd15 = self.sd15_folder(model_dir)
            exports[BUNDLE_CFG] = (sd15, ["--lcm-lora", str(lcm_lora_path(sd15))])
        if settings.int8 and not settings.quick and BUNDLE_FAST in wanted:
            exports[BUNDLE_FAST] = (source, ["--fast", *tiny_vae])
        # Each bundle's folder is its kind's name; the FP16 bundle's (kind "bundle") says what it is.
        paths = {SOURCE: source, **{kind: model_dir / ("bundle-fp16" if kind == BUNDLE else kind) for kind in exports}}
        if settings.quick and BUNDLE_DEEP_CACHE in wanted:
            paths[BUNDLE_DEEP_CACHE] = paths[BUNDLE]
        # The tiny exports are mostly Python start-up and tracing, which leave a core idle: two at a time
        # take 63 s instead of 72 s on 2 CPUs. Real-size exports use every core, so they go one by one.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2 if settings.quick else 1) as pool:
            list(pool.map(lambda kind: self.export(exports[kind][0], paths[kind], exports[kind][1]), exports))
        self.results["model"]["bundles"] = {
            kind: {
                "path": str(path),
                "bytes": _folder_bytes(path),
                **_bundle_facts(path),
            }
            for kind, path in paths.items()
            if path.exists()
        }
        return {kind: path for kind, path in paths.items() if path.exists()}

    def taesd_folder(self, model_dir: Path) -> Path:
        """A random-weight TAESD (real architecture; tiny in --quick) as a diffusers folder, built once."""
        taesd = model_dir / "taesd"
        if not (taesd / "config.json").exists():
            code = (
                "import sys; from benchmarks.model import save_taesd; "
                "save_taesd(sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1')"
            )
            subprocess.run(
                [sys.executable, "-c", code, str(taesd), str(self.settings.seed), "1" if self.settings.quick else "0"],
                check=True,
                cwd=REPO_ROOT,
                env=child_env(),
                capture_output=True,
            )
        return taesd

    def sd15_folder(self, model_dir: Path) -> Path:
        """The SD1.5 architecture with random weights and a random LCM-LoRA beside it (benchmarks.model),
        built once; the tiny SD1.5-like pipeline in --quick."""
        folder = model_dir / "source-sd15"
        if not (folder / "model_index.json").exists():
            self.log("building the SD1.5 diffusers folder and its random LCM-LoRA")
            code = (
                "import sys; from benchmarks.model import save_sd15_pipeline; "
                "save_sd15_pipeline(sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1')"
            )
            result = run_measured(
                [sys.executable, "-c", code, str(folder), str(self.settings.seed), "1" if self.settings.quick else "0"],
                self.scratch / "logs" / "build-sd15.log",
                self.settings.timeout,
                env=child_env(),
                cwd=REPO_ROOT,
            )
            if not result.ok:
                self.error("building the SD1.5 folder failed", result)
        return folder

    def source_folder(self, model_dir: Path) -> Path:
        settings = self.settings
        dev_python = sys.executable  # the development environment has the [export] extra (torch)
        if settings.source:
            folder = Path(settings.source)
            if not folder.is_dir():
                code = (
                    "import sys; from huggingface_hub import snapshot_download; "
                    "print(snapshot_download(sys.argv[1], ignore_patterns=['*.bin', '*.ckpt', '*.onnx*', '*.msgpack', "
                    "'safety_checker/*', 'feature_extractor/*', '*.fp16.*']))"
                )
                completed = subprocess.run(
                    [dev_python, "-c", code, settings.source],
                    capture_output=True,
                    text=True,
                    env={**child_env(), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")},
                )
                if completed.returncode != 0:
                    raise SystemExit(f"cannot download {settings.source}: {completed.stderr.strip().splitlines()[-1:]}")
                folder = Path(completed.stdout.strip().splitlines()[-1])
            self.results["model"] = {"name": settings.source, "weights": "real", "source": str(folder)}
            return folder
        folder = model_dir / "source"
        if settings.quick:
            name, code = (
                "tiny random (lcm_export.tiny)",
                "import sys; from lcm_export.tiny import save_tiny_pipeline as s; "
                "s(sys.argv[1], seed=int(sys.argv[2]))",
            )
            command = [dev_python, "-c", code, str(folder), str(settings.seed)]
        else:
            name = MODEL_NAME
            command = [dev_python, "-m", "benchmarks.model", str(folder), str(settings.seed)]
        self.results["model"] = {
            "name": name,
            "weights": f"random, seed {settings.seed}",
            "configs_digest": configs_digest(),
            "source": str(folder),
        }
        if not (folder / "model_index.json").exists():
            self.log(f"building the {name} diffusers folder")
            result = run_measured(
                command,
                self.scratch / "logs" / "build-model.log",
                self.settings.timeout,
                env=child_env(),
                cwd=REPO_ROOT,
            )
            self.results["model"]["build"] = result.to_dict()
            if not result.ok:
                raise SystemExit(f"building the model failed:\n{result.log_tail()}")
        return folder

    def export(self, source: Path, out: Path, options: list[str]) -> None:
        # A bundle is reused while the code that wrote it and its options stand; otherwise a change to
        # the export (a new --fast piece, say) would be measured on the old bundle.
        stamp_file = out.parent / f"{out.name}.export.json"
        stamp = {"options": options, "code": export_code_digest()}
        if (out / "manifest.json").exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
            return
        self.log(f"exporting {out.name} with lcm-export {' '.join(options)}".rstrip())
        command = [
            sys.executable,
            "-c",
            "from lcm_export.entry import main; main()",
            str(source),
            str(out),
            "--force",
            *options,
        ]
        result = run_measured(
            command,
            self.scratch / "logs" / f"export-{out.name}.log",
            self.settings.timeout * 2,
            env=child_env(),
            cwd=REPO_ROOT,
        )
        self.results["model"].setdefault("exports", {})[out.name] = {"options": options, **result.to_dict()}
        if not result.ok:
            self.error(f"lcm-export {' '.join(options)} failed", result)
        else:
            stamp_file.write_text(json.dumps(stamp))

    # -- bounds -----------------------------------------------------------------------------------
    def count_flops(self, source: Path) -> None:
        settings = self.settings
        height, width = settings.height, settings.width
        digest = configs_digest()
        counts = None if (settings.quick or settings.source) else flop_store.stored_flops(digest, height, width)
        if counts is None or not flop_store.count_keys() <= set(counts):
            self.log("counting FLOPs with torch's FlopCounterMode (meta device)")
            folder_args = [str(source)] if (settings.quick or settings.source) else []
            completed = subprocess.run(
                [sys.executable, "-m", "benchmarks.flops", str(height), str(width), *folder_args],
                capture_output=True,
                text=True,
                cwd=REPO_ROOT,
                env=child_env(),
            )
            if completed.returncode != 0:
                self.results["errors"].append(f"FLOP count failed: {completed.stderr.strip()[-500:]}")
                return
            counts = json.loads(completed.stdout.strip().splitlines()[-1])
            if not (settings.quick or settings.source):
                flop_store.store_flops(digest, height, width, counts)
        self.results["flops"] = counts

    def matmul_peak(self) -> None:
        self.log("measuring OpenVINO's peak matmul throughput (f32, bf16, int8)")
        out = self.scratch / "matmul_peak.json"
        command = [self.python_for("lcm-runtime"), str(WORKERS / "matmul_peak.py"), str(out)]
        if self.settings.quick:
            command.append("--quick")
        result = run_measured(
            command, self.scratch / "logs" / "matmul_peak.log", self.settings.timeout, env=child_env()
        )
        if result.ok:
            self.results["matmul"] = json.loads(out.read_text())
        else:
            self.error("matmul peak failed", result)

    # -- systems ----------------------------------------------------------------------------------
    def shape(self, measurement: Measurement) -> dict[str, int]:
        """Image size, images per call and timed calls of one measurement (the report compares like with like)."""
        settings = self.settings
        height, width = settings.height, settings.width
        if measurement.size:  # a size row keeps its ratio to the run's size (--quick halves all of them)
            height = width = measurement.size * settings.height // Settings.height
        runs = settings.runs if measurement.runs is None else min(measurement.runs, settings.runs)
        return {"height": height, "width": width, "batch": measurement.batch, "timed_runs": runs}

    def entry_for(self, measurement: Measurement, paths: dict[str, Path]) -> dict[str, Any]:
        """The run's entry before measuring; its status is set already when it cannot run (skipped)."""
        shape = self.shape(measurement)
        entry: dict[str, Any] = {
            "key": measurement.key,
            "system": measurement.system,
            "label": measurement.label,
            "precision": measurement.precision,
            "variant": measurement.variant,
            "environment": measurement.environment,
            "model": measurement.model,
            **shape,
        }
        if self.settings.quick and not available_here(measurement):
            entry.update(status="skipped", reason=f"{measurement.module} is not installed in this environment")
            return entry
        if not self.wants(measurement):
            entry.update(status="skipped", reason="a --full row (sizes, batches, --fast's pieces alone)")
            return entry
        minutes = (time.perf_counter() - (self.measuring_started or self.started)) / 60
        if minutes > self.settings.budget_minutes:
            entry.update(
                status="skipped",
                reason=f"the run's {self.settings.budget_minutes:.0f}-minute measuring budget was spent "
                f"({minutes:.0f} min); raise --budget-minutes or use --only",
            )
            return entry
        if measurement.model not in paths:
            entry.update(status="skipped", reason=f"no {measurement.model} (its export failed or was not asked for)")
        return entry

    def worker_command(
        self,
        measurement: Measurement,
        paths: dict[str, Path],
        out_dir: Path,
        pace: Path | None = None,
        runs: int | None = None,
    ) -> list[str]:
        settings, shape = self.settings, self.shape(measurement)
        command = [
            self.python_for(measurement.environment),
            str(WORKERS / measurement.worker),
            "--model",
            str(paths[measurement.model]),
            "--out-dir",
            str(out_dir),
            "--runs",
            str(shape["timed_runs"] if runs is None else runs),
            "--precision",
            measurement.precision,
            "--variant",
            measurement.variant,
            "--prompt",
            settings.prompt,
            "--seed",
            str(settings.seed),
            "--steps",
            str(settings.steps),
            "--guidance",
            str(measurement.guidance if measurement.guidance is not None else settings.guidance),
            "--height",
            str(shape["height"]),
            "--width",
            str(shape["width"]),
            "--batch",
            str(shape["batch"]),
        ]
        return command + (["--pace", str(pace)] if pace else [])

    def finish(self, entry: dict[str, Any], result: ProcessResult, out_dir: Path) -> dict[str, Any]:
        entry["process"] = result.to_dict()
        if result.ok and (out_dir / "result.json").exists():
            entry.update(status="ok", worker=json.loads((out_dir / "result.json").read_text()))
            median = entry["worker"]["median_seconds"]
            self.log(f"  {entry['key']}: median {median:.3f} s, peak RSS {result.peak_rss_bytes / 2**30:.2f} GiB")
        else:
            entry.update(status="timed out" if result.timed_out else "failed", reason=result.log_tail())
            self.log(f"  {entry['key']}: {entry['status']}")
        return entry

    def measure(self, measurement: Measurement, paths: dict[str, Path]) -> dict[str, Any]:
        """One system alone in its fresh process: load, the first image, then the timed ones."""
        entry = self.entry_for(measurement, paths)
        if "status" in entry:
            return entry
        out_dir = self.scratch / "runs" / measurement.key
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            command = self.worker_command(measurement, paths, out_dir)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            entry.update(status="failed", reason=f"environment: {str(error)[-400:]}")
            return entry
        self.log(f"measuring {measurement.key}")
        result = run_measured(
            command,
            self.scratch / "logs" / f"{measurement.key}.log",
            self.settings.timeout,
            env=child_env(),
            first_png=out_dir / "first.png",
        )
        return self.finish(entry, result, out_dir)

    def start_resident(self, measurement: Measurement, paths: dict[str, Path], turns: int, timeout: float) -> Resident:
        """``measurement``'s worker in its fresh process, loading; it then makes ``turns`` timed images,
        each when told (Resident.turn). Raises what building its environment raises."""
        out_dir, pace = self.scratch / "runs" / measurement.key, self.scratch / "pace" / measurement.key
        for folder in (out_dir, pace):
            shutil.rmtree(folder, ignore_errors=True)
        pace.mkdir(parents=True)
        command = self.worker_command(measurement, paths, out_dir, pace, runs=turns)
        resident = Resident(out_dir, pace)
        resident.start(command, self.scratch / "logs" / f"{measurement.key}.log", timeout)
        return resident

    def measure_interleaved(self, group: list[Measurement], paths: dict[str, Path]) -> list[dict[str, Any]]:
        """The group's systems resident side by side, each in its fresh process, loaded one after the
        other (so that no load shares the CPU), then taking turns image by image: round k makes timed
        image k of each, in alternating order (A B C, C B A, ...). A drift of the machine's speed then
        reaches all of them alike, and the ratio of two systems' images in one round cancels it."""
        entries = {measurement.key: self.entry_for(measurement, paths) for measurement in group}
        members = [measurement for measurement in group if "status" not in entries[measurement.key]]
        # Every member makes as many timed images as there are rounds: a worker waits for each turn.
        rounds = min((self.shape(measurement)["timed_runs"] for measurement in members), default=0)
        running: dict[str, Resident] = {}
        group_busy_before, group_started = machine_busy_seconds(), time.perf_counter()
        # A resident worker waits through the others' loads and turns: --timeout for each member.
        process_timeout = self.settings.timeout * max(len(members), 1)
        for measurement in members:
            self.log(f"measuring {measurement.key} (interleaved: loading)")
            try:
                resident = self.start_resident(measurement, paths, rounds, process_timeout)
            except (RuntimeError, subprocess.CalledProcessError) as error:
                entries[measurement.key].update(status="failed", reason=f"environment: {str(error)[-400:]}")
                continue
            if resident.wait_ready(self.settings.timeout):
                running[measurement.key] = resident
            else:
                self.finish(entries[measurement.key], resident.result(), resident.out_dir)
        order = list(running)
        for index in range(rounds):
            self.log(f"round {index + 1} of {rounds}: {', '.join(order)}")
            for key in list(order):
                if not running[key].turn(index, self.settings.timeout):
                    self.log(f"  {key} stopped in round {index + 1}")
                    order.remove(key)
            order.reverse()
        # Only now may the workers end: one that exits frees its memory while the next one measures.
        for resident in running.values():
            resident.release()
        results = without_group_cpu(
            {key: resident.result() for key, resident in running.items()},
            group_busy_before,
            machine_busy_seconds(),
            time.perf_counter() - group_started,
        )
        for key, resident in running.items():
            self.finish(entries[key], results[key], resident.out_dir)
            entries[key]["interleaved_with"] = [other for other in running if other != key]
        return list(entries.values())

    def cold_starts(
        self, bundle: Path, options: tuple[str, ...] = (), label: str = "", reference: str = BASELINE
    ) -> list[dict[str, Any]]:
        """lcm-run's CLI from a new process to the PNG on disk, with an empty then a filled cache (the
        filled one FILLED_CACHE_STARTS times: the entry is the median start, the others are kept in
        ``first_png_runs``); ``reference`` is the measurement whose warm latency the report subtracts."""
        settings = self.settings
        if settings.quick:  # this python's own lcm-run, not whichever comes first on PATH
            beside = Path(sys.executable).parent / "lcm-run"
            lcm_run = str(beside) if beside.exists() else shutil.which("lcm-run") or "lcm-run"
        else:
            lcm_run = self.lcm_run_command()
        cache = self.scratch / f"compile-cache-{bundle.name}"
        shutil.rmtree(cache, ignore_errors=True)
        starts = []
        for name, repeats in (
            (f"{label}empty cache", 1),
            (f"{label}filled cache", 1 if settings.quick else FILLED_CACHE_STARTS),
        ):
            png = self.scratch / "cold" / f"{name.replace(' ', '-').replace(',', '')}.png"
            command = [
                lcm_run,
                settings.prompt,
                "--model",
                str(bundle),
                "--steps",
                str(settings.steps),
                "--guidance",
                str(settings.guidance),
                "--seed",
                str(settings.seed),
                "--height",
                str(settings.height),
                "--width",
                str(settings.width),
                "--output",
                str(png),
                "--overwrite",
                *options,
            ]
            self.log(f"lcm-run CLI cold start, {name}" + (f" ({repeats} times)" if repeats > 1 else ""))
            results = []
            for _ in range(repeats):
                png.unlink(missing_ok=True)
                results.append(
                    run_measured(
                        command,
                        self.scratch / "logs" / f"cold-{png.stem}.log",
                        settings.timeout,
                        env=child_env({"LCM_CACHE_DIR": str(cache)}),
                        first_png=png,
                    )
                )
                if not results[-1].ok:
                    break
            # The empty-cache start leaves ~2 GB of blobs dirty in the page cache; flushing them here
            # keeps their writeback out of the filled-cache starts it would otherwise slow down.
            os.sync()
            ok = all(result.ok for result in results)
            timed = sorted(results, key=lambda result: result.first_png_seconds or float("inf"))
            result = results[-1] if not ok else timed[len(timed) // 2]
            entry = {
                "name": name,
                "reference": reference,
                "status": "ok" if ok else "failed",
                "process": result.to_dict(),
                "first_png_runs": [result.first_png_seconds for result in results],
                "stderr_summary": result.log_tail(2),
            }
            starts.append(entry)
            if not ok:
                break
        return starts

    def error(self, what: str, result: ProcessResult) -> None:
        self.results["errors"].append(f"{what}: {result.log_tail()}")
        self.log(f"{what} (log: {result.log})")

    # -- the whole run ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.results["machine"] = machine_facts()
        paths = self.prepare_model()
        # Every environment before any measurement: pip's minutes must not eat the measuring budget.
        for environment in dict.fromkeys(["lcm-runtime", *(m.environment for m in self.to_measure())]):
            try:
                self.python_for(environment)
            except (RuntimeError, subprocess.CalledProcessError) as error:
                self.results["errors"].append(f"environment {environment}: {str(error)[-400:]}")
        self.results["minutes"] = {"preparing": round((time.perf_counter() - self.started) / 60, 1)}
        if self.settings.prepare_only:
            return self.results
        self.measuring_started = time.perf_counter()
        self.count_flops(paths[SOURCE])
        self.matmul_peak()
        if BUNDLE not in paths:
            raise SystemExit("the FP16 export failed; nothing to measure (see the errors above)")
        # Each cold start right before the warm measurement it is compared with: this VM's speed drifts
        # by ~10% over minutes, which a comparison between runs far apart would count as start-up.
        cold_plan = [
            (reference, paths[bundle], options, label)
            for reference, bundle, options, label in (
                (BASELINE, BUNDLE, (), ""),
                ("lcm-run-bf16", BUNDLE_BF16, (), "bf16 weights, "),
                ("lcm-run-fast", BUNDLE_FAST, ("--fast",), "--fast, "),
                ("lcm-run-one-shot", BUNDLE_ONE_SHOT, ("--vae", "tiny"), "bf16 + token downsampling + --vae tiny, "),
            )
            if bundle in paths
        ]
        self.results["cold_start"] = []

        def cold_starts_before(key: str | None) -> None:
            for planned in [planned for planned in cold_plan if key is None or planned[0] == key]:
                cold_plan.remove(planned)
                reference, bundle, options, label = planned
                self.results["cold_start"] += self.cold_starts(bundle, options, label, reference)

        self.results["runs"] = []
        for group in measurement_groups(select(self.settings.only)):
            for member in group:
                cold_starts_before(member.key)
            if len(group) > 1:
                self.results["runs"] += self.measure_interleaved(group, paths)
            else:
                self.results["runs"].append(self.measure(group[0], paths))
        cold_starts_before(None)  # those whose reference was not measured
        self.results["minutes"]["measuring"] = round((time.perf_counter() - self.measuring_started) / 60, 1)
        attach_deviations(self.results["runs"], self.scratch / "runs", F32_BASELINE)
        self.results["openvino_version"] = (self.results.get("matmul") or {}).get("openvino")
        return self.results


def without_group_cpu(
    results: dict[str, ProcessResult], busy_before: float | None, busy_after: float | None, wall: float
) -> dict[str, ProcessResult]:
    """The results of an interleaved group with "other CPU use" counted outside the whole group: each
    member's own measurement counts the members that took turns beside it, which is the design, not
    a disturbance. The group's outside use is spread over each member's time in proportion."""
    if busy_before is None or busy_after is None or wall <= 0:
        return results
    outside = max(busy_after - busy_before - sum(result.cpu_seconds or 0.0 for result in results.values()), 0.0)
    return {
        key: replace(result, other_cpu_seconds=outside * min(result.wall_seconds / wall, 1.0))
        for key, result in results.items()
    }


def wait_for_file(path: Path, thread: threading.Thread, timeout: float) -> bool:
    """Until a worker writes ``path`` (True), or its process ends or the timeout passes first (False)."""
    deadline = time.perf_counter() + timeout
    while not path.exists():
        if not thread.is_alive() or time.perf_counter() > deadline:
            return path.exists()
        time.sleep(0.005)
    return True


def _bundle_facts(folder: Path) -> dict[str, Any]:
    """From the bundle's manifest: the factor its UNet pools self-attention keys by (1: exact attention,
    and for the diffusers source folder, which is no bundle) and its TAESD decoder's precision (int8-ptq
    with lcm-export --quantize-tiny-vae; None without one)."""
    from lcm_runtime.bundle import MANIFEST_FILE, TINY_VAE_DECODER, read_manifest

    if not (Path(folder) / MANIFEST_FILE).is_file():
        return {"token_downsampling": 1, "tiny_vae_precision": None}
    components = read_manifest(folder).components
    pooled = components.get("unet", {}).get("token_downsampling") or {}
    return {
        "token_downsampling": int(pooled.get("factor", 1)),
        "tiny_vae_precision": components.get(TINY_VAE_DECODER, {}).get("precision"),
    }


# What writes a bundle: lcm_export, and the runtime modules its calibration runs and manifest use.
EXPORT_CODE = (
    "export/lcm_export",
    "runtime/lcm_runtime/bundle.py",
    "runtime/lcm_runtime/denoise.py",
    "runtime/lcm_runtime/guidance.py",
    "runtime/lcm_runtime/models.py",
    "runtime/lcm_runtime/tokenizer.py",
    "runtime/lcm_runtime/schedulers",
)


@functools.cache
def export_code_digest() -> str:
    """A digest of the code that writes bundles (EXPORT_CODE): the benchmark re-exports when it changes."""
    digest = hashlib.sha256()
    for entry in EXPORT_CODE:
        root = REPO_ROOT / entry
        for path in sorted(root.rglob("*") if root.is_dir() else [root]):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def results_path(settings: Settings, results: dict[str, Any]) -> Path:
    """results/<machine>-<UTC date and minute>.json, e.g. ...-2026-11-25T2010Z.json: a second run on
    the same day must not overwrite the first. A run of some rows (--only) goes to results/headline/
    when it holds every headline row, else to results/checks/: neither is the README's full run."""
    slug = settings.machine or machine_slug(results["machine"])
    directory = settings.results_dir if not settings.quick else settings.work_dir / "quick" / "results"
    if settings.only and not settings.quick:
        directory = directory / ("headline" if set(HEADLINE_KEYS) <= set(settings.only) else "checks")
    directory.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.fromisoformat(results["date"]).astimezone(datetime.timezone.utc)
    return directory / f"{slug}-{started:%Y-%m-%dT%H%MZ}.json"

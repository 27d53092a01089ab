"""`lcm-run batch`: a prompt file -> one PNG per image in a folder and one manifest line per PNG;
resumable after ``kill -9``, checkable with ``--verify`` (docs/batch.md).

The pieces stand alone, so that another runner (a Ray Data ``map_batches`` over an actor pool) can
reuse them and write the very same files:

- batch_plan.py: ``read_rows`` and ``plan`` -> one ``ImageTask`` per image (``to_dict``/``from_dict``
  carry a task through a data frame);
- ``Generator(options)``: loads the bundle once; ``generate(task)`` -> ``Generated`` (the PNG's bytes
  and its manifest record), ``try_generate`` -> ``Generated`` or ``Failure``;
- ``JobFolder``: the output folder: its lock, ``job.json``, what is done (``prepare``), ``--restart``
  and a clean manifest (``commit``); ``Writer``: writes a PNG atomically, then appends its manifest
  line (one write, then fsync);
- ``run_job`` (in-process or N processes) and ``verify_folder`` tie them together for the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import __version__
from .batch_plan import BadRow, BundleDefaults, Defaults, ImageTask, check_defaults, plan, read_rows
from .errors import InputError, LCMError
from .image import write_atomically

if TYPE_CHECKING:
    from .loading import ModelFolder

MANIFEST = "manifest.jsonl"
JOB_FILE = "job.json"
JOB_FORMAT = "lcm-run batch"
JOB_VERSION = 1
PROMPT_SYNTAX = "a1111"  # as lcm-run reads a prompt: (word:1.2) weights, BREAK, long prompts
# Options of job.json that change finished images (num_images does not: more images are new files).
JOB_OPTIONS = {
    "seed": "--seed",
    "steps": "--steps",
    "guidance": "--guidance",
    "width": "--width",
    "height": "--height",
    "strength": "--strength",
    "negative_prompt": "--negative-prompt",
    "precision": "--precision",
    "device": "--device",
    "safety_checker": "--no-safety-checker",
    "vae": "--vae",
    "fast": "--fast",
    "deep_cache_interval": "--deep-cache",
}
# What an option missing from an older job.json was: the default then.
JOB_OPTION_DEFAULTS = {"deep_cache_interval": 1}
# write_atomically's temporaries of the job's PNGs, job.json and a rewritten manifest
_TEMPORARY = re.compile(r"^\..+\.(png|json|jsonl)\.part$")


# --- generating ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorOptions:
    """How a Generator loads the bundle: the options that are the same for every image of a job."""

    model: str
    device: str = "CPU"
    precision: str = "auto"
    safety_checker: bool = True
    vae: str | None = None
    fast: bool = False
    deep_cache_interval: int = 1
    no_cache: bool = False
    threads: int | None = None  # OpenVINO inference threads (None: every core)


@dataclass
class Generated:
    task: ImageTask
    png: bytes
    record: dict[str, Any]  # the manifest line: every parameter, the PNG's sha256, the seconds it took
    load_seconds: float = 0.0  # the Generator's load, on the first image it makes (N processes report it)


@dataclass(frozen=True)
class Failure:
    row: int
    line: int
    file: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class Generator:
    """The bundle loaded once, its three tasks sharing the compiled models (``from_pipe``), as the
    server's engine; one image per call, seeded by its task, as ``lcm-run PROMPT --seed S`` makes it:
    the PNG's bytes are the same as that command's (one call per image: docs/batch.md)."""

    def __init__(self, options: GeneratorOptions) -> None:
        from .img2img import LCMImg2ImgPipeline
        from .inpaint import LCMInpaintPipeline
        from .pipeline import LCMPipeline

        started = time.perf_counter()
        self.options = options
        self.text = LCMPipeline.from_pretrained(
            options.model,
            device=options.device,
            precision=options.precision,
            cache_dir=False if options.no_cache else None,
            vae=options.vae,
            fast=options.fast,
            safety_checker=options.safety_checker,
            max_images_per_call=1,
            deep_cache_interval=options.deep_cache_interval,
        )
        if options.threads is not None:
            self.text.core.set_property(options.device, {"INFERENCE_NUM_THREADS": options.threads})
        self.img2img = LCMImg2ImgPipeline.from_pipe(self.text)
        self.inpaint = LCMInpaintPipeline.from_pipe(self.text)
        self.load_seconds = time.perf_counter() - started
        self._reported_load = False

    def generate(self, task: ImageTask) -> Generated:
        from .image import png_bytes
        from .image_input import open_image

        started = time.perf_counter()
        common: dict[str, Any] = dict(
            num_inference_steps=task.steps,
            guidance_scale=task.guidance,
            generator=task.seed,
            prompt_syntax=PROMPT_SYNTAX,
        )
        if task.negative_prompt is not None:  # only a cfg (LCM-LoRA) bundle takes one: the pipeline says so
            common["negative_prompt"] = task.negative_prompt
        if task.image is None:
            output = self.text(task.prompt, height=task.height, width=task.width, **common)
        elif task.strength is None:
            raise InputError("an image task needs a strength", argument="strength")
        elif task.mask is None:
            output = self.img2img(task.prompt, image=open_image(task.image, "image"), strength=task.strength, **common)
        else:
            output = self.inpaint(
                task.prompt,
                image=open_image(task.image, "image"),
                mask_image=open_image(task.mask, "mask"),
                height=task.height,
                width=task.width,
                strength=task.strength,
                **common,
            )
        picture = output.images[0]
        flagged = output.nsfw_content_detected[0] if output.nsfw_content_detected else None
        png = png_bytes(picture, {"parameters": self.parameters(task, picture.width, picture.height, flagged)})
        record = self.record(task, picture.width, picture.height, flagged)
        record.update(sha256=hashlib.sha256(png).hexdigest(), seconds=round(time.perf_counter() - started, 3))
        load = 0.0 if self._reported_load else self.load_seconds
        self._reported_load = True
        return Generated(task, png, record, load)

    def try_generate(self, task: ImageTask) -> Generated | Failure:
        """``generate``, or the one line of what made the image impossible (its row's values)."""
        try:
            return self.generate(task)
        except LCMError as error:
            return Failure(task.row, task.line, task.file, str(error))

    @property
    def precision_ran_at(self) -> str:
        return self.text.execution_precision().get("unet", self.options.precision)

    @property
    def safety_state(self) -> str | None:
        return "on" if self.text.safety_checker else "off" if self.text.parts.safety else None

    def parameters(self, task: ImageTask, width: int, height: int, flagged: bool | None) -> str:
        """The PNG's A1111 parameters, as lcm-run writes them for one image of seed ``task.seed``."""
        from .outputs import png_parameters

        pipe = self.text
        return png_parameters(
            task.prompt,
            steps=task.steps,
            guidance=task.guidance,
            seed=task.seed,
            width=width,
            height=height,
            model=pipe.folder.name,
            model_hash=pipe.folder.identity(),
            precision=self.precision_ran_at,
            device=self.options.device,
            vae=pipe.vae,
            index=0,  # one image per call: each PNG says Batch size 1, as `lcm-run --seed S` would
            count=1,
            strength=task.strength,
            image_hash=task.image_hash,
            mask_hash=task.mask_hash,
            safety_checker=self.safety_state,
            flagged=flagged,
            prompt_syntax=PROMPT_SYNTAX,
            negative_prompt=task.negative_prompt,
            loras=pipe.folder.loras,
            deep_cache_interval=pipe.deep_cache_interval,
        )

    def record(self, task: ImageTask, width: int, height: int, flagged: bool | None) -> dict[str, Any]:
        """The manifest line of the task's image, but its sha256 and seconds: every parameter."""
        return {
            "row": task.row,
            "line": task.line,
            "k": task.k,
            "file": task.file,
            "name": task.name,
            "task": task.kind,
            "prompt": task.prompt,
            "negative_prompt": task.negative_prompt,
            "seed": task.seed,
            "steps": task.steps,
            "guidance": task.guidance,
            "width": width,
            "height": height,
            "strength": task.strength,
            "image": task.image,
            "image_hash": task.image_hash,
            "mask": task.mask,
            "mask_hash": task.mask_hash,
            "model": self.text.folder.name,
            "model_hash": self.text.folder.identity(),
            "device": self.options.device,
            "precision": self.precision_ran_at,
            "vae": self.text.vae,
            "safety_checker": self.safety_state,
            "flagged": flagged,
            "prompt_syntax": PROMPT_SYNTAX,
            "version": __version__,
        }


# --- the output folder -----------------------------------------------------------------------------


def file_sha256(path: Path) -> str | None:
    """The file's sha256, or None when it cannot be read."""
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    except OSError:
        return None
    return hasher.hexdigest()


def _is_own_file(name: Any) -> bool:
    """A manifest's file name is a plain PNG name inside DIR (never a path out of it)."""
    return (
        isinstance(name, str)
        and name.endswith(".png")
        and not name.startswith(".")
        and Path(name).name == name
        and "\\" not in name
    )


@dataclass
class ManifestContent:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> its latest record
    lines: int = 0  # complete lines read
    torn: bool = False  # the last line has no newline: an append cut short by a kill, ignored
    unreadable: list[int] = field(default_factory=list)  # line numbers that are not a record
    duplicates: int = 0  # records of a file that a later line replaced (an image redone)


def read_manifest(path: Path) -> ManifestContent:
    content = ManifestContent()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return content
    lines = data.split(b"\n")
    if lines[-1]:
        content.torn = True
    for number, line in enumerate(lines[:-1], 1):
        content.lines += 1
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if (
            not isinstance(record, dict)
            or not _is_own_file(record.get("file"))
            or not re.fullmatch(r"[0-9a-f]{64}", str(record.get("sha256")))
        ):
            content.unreadable.append(number)
            continue
        if record["file"] in content.records:
            content.duplicates += 1
        content.records[record["file"]] = record
    return content


def manifest_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode()


class Writer:
    """Writes a job's images into its folder: the PNG atomically (a temporary file, fsync, rename),
    then its manifest line with one write() of the whole line and an fsync. A kill at any moment leaves
    no partial PNG; at worst a torn last line, which ``read_manifest`` ignores (the image is redone)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd = os.open(folder / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, generated: Generated) -> Path:
        path = self.folder / generated.task.file
        write_atomically(path, generated.png, overwrite=True)  # a file of the job's own, or none
        self.append(generated.record)
        return path

    def append(self, record: dict[str, Any]) -> None:
        data = manifest_line(record)
        written = os.write(self._fd, data)
        while written < len(data):  # only on a full disk: the next run ignores the torn line
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class Prepared:
    """What a run finds in its folder: the tasks to do, the ones done, and what it will change."""

    todo: list[ImageTask]
    skipped: int
    stale: set[str]  # records to drop: their file is missing or changed (redone)
    rewrite: bool  # the manifest needs rewriting (torn or unreadable lines, duplicates, stale records)
    restart: bool


class JobFolder:
    """DIR: job.json (the job's options), manifest.jsonl and the PNGs. Locked while a run uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: int | None = None

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def open(self) -> None:
        """Create the folder and take its lock (another run on it fails at once)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"cannot create --output {self.path} ({error.strerror}); choose another --output"
            ) from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise InputError(f"cannot write to --output {self.path} (permission denied); choose another --output")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise InputError(
                f"another lcm-run batch is writing to {self.path}; wait for it, or choose another --output"
            ) from None
        self._lock = descriptor

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    def read_job(self) -> dict[str, Any] | None:
        path = self.path / JOB_FILE
        if not path.exists():
            return None
        try:
            job = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            job = None
        if not isinstance(job, dict) or job.get("format") != JOB_FORMAT:
            raise InputError(f"{path} is not an lcm-run batch job file; choose another --output")
        if not isinstance(job.get("version"), int) or job["version"] > JOB_VERSION:
            raise InputError(f"{path} was written by a newer lcm-openvino; upgrade it, or choose another --output")
        return job

    def write_job(self, job: dict[str, Any]) -> None:
        data = (json.dumps(job, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        write_atomically(self.path / JOB_FILE, data, overwrite=True)

    def remove_temporaries(self) -> int:
        """The temporary files of writes a kill cut short (``.NAME.XXXX.png.part``): the job's own."""
        removed = 0
        for entry in os.scandir(self.path):
            if entry.is_file(follow_symlinks=False) and _TEMPORARY.match(entry.name):
                os.unlink(entry.path)
                removed += 1
        return removed

    def remove_outputs(self) -> int:
        """--restart: the PNGs the manifest lists, then the manifest. Nothing else is touched."""
        removed = 0
        for name in read_manifest(self.manifest_path).records:
            path = self.path / name
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed += 1
        if self.manifest_path.exists():
            self.manifest_path.unlink()
        return removed

    def prepare(self, job: dict[str, Any], tasks: Sequence[ImageTask], restart: bool) -> Prepared:
        """Compare with what the folder holds; changes nothing (``commit`` does). Raises InputError
        when the folder is not this job's, or a finished image would change."""
        old = self.read_job()
        if old is None:
            if self.manifest_path.exists():
                raise InputError(
                    f"{self.path} has a {MANIFEST} but no {JOB_FILE}: it is not an lcm-run batch folder; "
                    "choose another --output"
                )
            for task in tasks:
                if os.path.lexists(self.path / task.file):
                    raise InputError(
                        f"{self.path / task.file} exists and {self.path} is no batch job's folder (no {JOB_FILE}): "
                        "it is not this job's to replace; choose an empty or new --output"
                    )
            return Prepared(list(tasks), 0, set(), False, restart=False)
        if restart:
            return Prepared(list(tasks), 0, set(), False, restart=True)
        _check_same_job(self.path, old, job)
        content = read_manifest(self.manifest_path)
        todo, skipped, stale = [], 0, set()
        for task in tasks:
            record = content.records.get(task.file)
            if record is None:
                todo.append(task)
                continue
            for key, wanted in task.fingerprint().items():
                if record.get(key) != wanted:
                    raise InputError(
                        f"{self.path / task.file} was made with {key} {_shown(record.get(key))}, but line {task.line} "
                        f"now asks for {_shown(wanted)}: it would change a finished image; --restart starts "
                        "the job over, or choose another --output"
                    )
            if file_sha256(self.path / task.file) == record["sha256"]:
                skipped += 1
            else:
                stale.add(task.file)
                todo.append(task)
        rewrite = bool(content.torn or content.unreadable or content.duplicates or stale)
        return Prepared(todo, skipped, stale, rewrite, restart=False)

    def commit(self, job: dict[str, Any], prepared: Prepared) -> int:
        """Make the folder ready to append to: --restart's removals, a clean manifest, job.json.
        Returns the number of PNGs --restart removed."""
        removed = self.remove_outputs() if prepared.restart else 0
        self.remove_temporaries()
        if prepared.rewrite:
            content = read_manifest(self.manifest_path)
            kept = b"".join(
                manifest_line(record) for name, record in content.records.items() if name not in prepared.stale
            )
            write_atomically(self.manifest_path, kept, overwrite=True)
        self.write_job(job)
        return removed


def _shown(value: Any) -> str:
    return "the default" if value is None else repr(value)


def _check_same_job(folder: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    def refuse(what: str) -> None:
        raise InputError(
            f"{folder} holds a job made with {what}: it would change the finished images; "
            "--restart starts the job over (removing its images), or choose another --output"
        )

    if old.get("model_hash") != new["model_hash"] or (
        new["model_hash"] == "no-manifest" and old.get("model_path") != new["model_path"]
    ):
        refuse(f"another model ({old.get('model')}, bundle hash {old.get('model_hash')})")
    previous: dict[str, Any] = old["options"] if isinstance(old.get("options"), dict) else {}
    for key, option in JOB_OPTIONS.items():
        before = previous.get(key, JOB_OPTION_DEFAULTS.get(key))
        if before != new["options"][key]:
            refuse(f"{option} {_shown(before)}, not {_shown(new['options'][key])}")


def job_description(
    prompts: Path, folder: ModelFolder, options: GeneratorOptions, defaults: Defaults
) -> dict[str, Any]:
    """job.json: the options that decide the job's images, and where they came from."""
    return {
        "format": JOB_FORMAT,
        "version": JOB_VERSION,
        "prompts": str(prompts),
        "model": folder.name,
        "model_path": str(folder.root.resolve()),
        "model_hash": folder.identity(),
        "options": {
            **asdict(defaults),
            "precision": options.precision,
            "device": options.device,
            "safety_checker": options.safety_checker,
            "vae": options.vae,
            "fast": options.fast,
            "deep_cache_interval": options.deep_cache_interval,
        },
        "lcm_openvino": __version__,
    }


# --- a run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRequest:
    prompts: Path
    output: Path
    generator: GeneratorOptions
    defaults: Defaults = Defaults()
    workers: int = 1
    restart: bool = False
    strict: bool = False
    ray: RayOptions | None = None  # run the generation as a Ray Data pipeline (batch_ray.py)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: $RAY_ADDRESS, else a local Ray instance
    cpus_per_worker: float = 1.0  # what Ray reserves for each actor of the pool


class Listener:
    """What a front end hears of a run (the CLI draws its progress bar); each method does nothing."""

    def bad_row(self, bad: BadRow) -> None:
        """A row that cannot be made, found before any image is."""

    def loading(self, workers: int) -> None:
        """The bundle is being loaded (by each of ``workers`` processes)."""

    def started(self, todo: int, skipped: int) -> None:
        """``todo`` images will be made; ``skipped`` were already done."""

    def image_done(self, record: dict[str, Any]) -> None:
        """An image and its manifest line are written."""

    def image_failed(self, failure: Failure) -> None:
        """An image could not be made (its row's values); the run goes on unless --strict."""


@dataclass
class Summary:
    folder: Path
    planned: int
    made: int = 0
    skipped: int = 0
    removed: int = 0  # PNGs --restart removed
    failures: list[Failure] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    load_seconds: float = 0.0
    seconds: float = 0.0  # from loading the bundle to the last image
    workers: int = 1

    @property
    def images_per_minute(self) -> float:
        return 60.0 * self.made / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failures or self.bad_rows else 0


class RowError(LCMError):
    """--strict: a row could not be made; the run stopped there (exit 1: rows failed)."""


def run_job(request: JobRequest, listener: Listener | None = None) -> Summary:
    """The whole job: read and plan PROMPTS, compare with DIR, make what is missing, one image per call."""
    from .deep_cache import check_interval
    from .loading import open_model_folder
    from .models import check_device, compile_config
    from .openvino_runtime import ov
    from .vae_choice import choose_vae

    listener = listener or Listener()
    if not 1 <= request.workers <= 64:
        raise InputError(f"--workers must be from 1 to 64, got {request.workers}")
    rows = read_rows(request.prompts)
    bundle = open_model_folder(request.generator.model)
    facts = BundleDefaults.from_folder(bundle)
    check_defaults(request.defaults, facts)
    if request.defaults.negative_prompt:  # refused once here, not for every row, by a bundle that takes none
        from .guidance import Guidance

        Guidance.plan(bundle.facts, request.defaults.guidance, negative_prompt=request.defaults.negative_prompt)
    # A bad --precision, --device, --vae, --fast or --deep-cache fails here, before DIR or its job.json changes.
    compile_config(request.generator.precision)
    check_device(ov.Core(), request.generator.device)
    choose_vae(bundle, request.generator.vae, request.generator.fast)
    check_interval(bundle, request.generator.deep_cache_interval)
    planned = plan(rows.rows, request.defaults, facts, request.prompts.parent)
    bad = sorted(rows.bad + planned.bad, key=lambda row: row.line)
    if bad and request.strict:
        raise RowError(f"PROMPTS {bad[0]} (--strict stops at the first bad row; no image was made)")
    for row in bad:
        listener.bad_row(row)
    options = GeneratorOptions(**{**asdict(request.generator), "model": str(bundle.root)})
    job = job_description(request.prompts, bundle, options, request.defaults)
    job["planned"] = len(planned.tasks)
    folder = JobFolder(request.output)
    folder.open()
    try:
        prepared = folder.prepare(job, planned.tasks, request.restart)
        summary = Summary(request.output, len(planned.tasks), skipped=prepared.skipped, bad_rows=bad)
        summary.removed = folder.commit(job, prepared)
        summary.workers = min(request.workers, max(len(prepared.todo), 1))
        if prepared.todo:
            _make(prepared.todo, options, folder.path, summary, listener, request.strict, request.ray)
        else:
            listener.started(0, prepared.skipped)
    finally:
        folder.close()
    return summary


def _make(
    todo: list[ImageTask],
    options: GeneratorOptions,
    folder: Path,
    summary: Summary,
    listener: Listener,
    strict: bool,
    ray: RayOptions | None = None,
) -> None:
    started = time.perf_counter()
    listener.loading(summary.workers)
    with Writer(folder) as writer:

        def handle(result: Generated | Failure) -> None:
            if isinstance(result, Failure):
                summary.failures.append(result)
                listener.image_failed(result)
                if strict:
                    raise RowError(
                        f"PROMPTS {result} (--strict stopped the job after {summary.made} new images; rerun to resume)"
                    )
                return
            writer.write(result)
            summary.made += 1
            summary.load_seconds = max(summary.load_seconds, result.load_seconds)
            listener.image_done(result.record)

        try:
            if ray is not None:
                from .batch_ray import on_ray

                listener.started(len(todo), summary.skipped)
                for result in on_ray(todo, options, summary.workers, ray.address, ray.cpus_per_worker):
                    handle(result)
            elif summary.workers == 1:
                generator = Generator(options)
                summary.load_seconds = generator.load_seconds
                listener.started(len(todo), summary.skipped)
                for task in todo:
                    handle(generator.try_generate(task))
            else:
                listener.started(len(todo), summary.skipped)
                for result in _in_processes(todo, options, summary.workers):
                    handle(result)
        finally:
            summary.seconds = time.perf_counter() - started


# Each worker process holds one Generator, made on its first task (a load error ends the job).
_WORKER: Generator | None = None


@dataclass(frozen=True)
class _LoadFailed:
    error: LCMError


def _worker_start(parent: int) -> None:
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    def end_with_the_parent() -> None:  # a parent killed (kill -9) leaves no worker behind
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=end_with_the_parent, name="lcm-batch-parent", daemon=True).start()


def _worker_task(options: GeneratorOptions, task: dict[str, Any]) -> Generated | Failure | _LoadFailed:
    global _WORKER
    if _WORKER is None:
        try:
            _WORKER = Generator(options)
        except LCMError as error:
            return _LoadFailed(error)
    return _WORKER.try_generate(ImageTask.from_dict(task))


def _in_processes(todo: list[ImageTask], options: GeneratorOptions, workers: int) -> Iterator[Generated | Failure]:
    """The tasks on ``workers`` processes, each loading the bundle once; results in the order they
    finish (the manifest does not care). Each process keeps OpenVINO's threads on every core: fewer
    threads per process change the images' last bits (docs/batch.md), more processes must not."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold OpenVINO threads
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_start, initargs=(os.getpid(),)
    )
    pending: set[Future[Generated | Failure | _LoadFailed]] = set()
    queue = iter(todo)
    try:
        while True:
            for task in queue:
                pending.add(pool.submit(_worker_task, options, task.to_dict()))
                if len(pending) >= 2 * workers:
                    break
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise LCMError(
                        "a worker process died (out of memory?); rerun the same command to resume, with fewer --workers"
                    ) from None
                if isinstance(result, _LoadFailed):
                    raise result.error
                yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# --- verify ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    problem: str
    file: str


@dataclass
class Verified:
    folder: Path
    records: int
    good: int
    problems: list[Problem]
    planned: int | None  # the images the last run planned (job.json), when known


def verify_folder(folder: Path) -> Verified:
    """Every PNG the manifest lists against its sha256, and every PNG in DIR against the manifest."""
    if not folder.is_dir():
        raise InputError(f"--verify {folder} is not a folder; pass the --output folder of an lcm-run batch")
    job_path, manifest_path = folder / JOB_FILE, folder / MANIFEST
    if not job_path.exists() and not manifest_path.exists():
        raise InputError(f"{folder} holds no lcm-run batch job (no {JOB_FILE} or {MANIFEST})")
    content = read_manifest(manifest_path)
    problems: list[Problem] = []
    good = 0
    for name, record in content.records.items():
        digest = file_sha256(folder / name)
        if digest is None:
            problems.append(Problem("missing", name))
        elif digest != record["sha256"]:
            problems.append(Problem("changed (sha256 differs from the manifest)", name))
        else:
            good += 1
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        if entry.name.lower().endswith(".png") and entry.name not in content.records:
            problems.append(Problem("not in the manifest", entry.name))
    for number in content.unreadable:
        problems.append(Problem(f"line {number} is not a manifest record", MANIFEST))
    if content.torn:
        problems.append(Problem("its last line is torn (a run was killed; rerun it)", MANIFEST))
    planned = None
    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
        planned = int(job["planned"]) if isinstance(job, dict) and "planned" in job else None
    except (OSError, ValueError, TypeError):
        pass
    return Verified(folder, len(content.records), good, problems, planned)

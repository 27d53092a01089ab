"""`lcm-run batch`'s rows and plan: a prompt file -> one ``ImageTask`` per image, with its seed and
its file name. Deterministic and model-free (it reads the input pictures, to check and hash them), so
that any runner (lcm-run batch in one or N processes, a Ray Data job) plans the same images.

- ``read_rows(path)``: a JSONL, CSV or text file -> ``Row``s and ``BadRow``s, with line numbers;
- ``plan(rows, defaults, facts, base)``: rows -> ``Plan`` (tasks and bad rows); ``row_seed`` and
  ``noise.image_seed`` say how a row and its images are seeded, ``safe_name`` how a name becomes a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import validation
from .errors import InputError, first_line
from .noise import MAX_SEED, image_seed

if TYPE_CHECKING:
    from .loading import ModelFolder

FIELDS = tuple("prompt negative_prompt seed steps guidance width height num_images image mask strength name".split())
WHOLE_FIELDS = ("seed", "steps", "width", "height", "num_images")
NUMBER_FIELDS = ("guidance", "strength")
MAX_IMAGES_PER_ROW = 1000
MAX_STEPS = 1000  # beyond the bundle's original_inference_steps (checked per row); strength's bound per image
STEPS_HINT = " for this model (original_inference_steps)"
MAX_NAME = 100
# What makes an image: a finished image whose record differs from its task in one of these was made
# by other options or another row, and is never silently kept or replaced.
FINGERPRINT = tuple("prompt negative_prompt seed steps guidance width height strength image_hash mask_hash".split())


# --- rows ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of PROMPTS: what it sets, by field name (``FIELDS``), typed but not yet checked."""

    row: int  # 1-based position among PROMPTS' rows (blank and comment lines are no rows)
    line: int  # the line of PROMPTS it starts on
    values: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str
    row: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class Rows:
    rows: list[Row] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


def read_rows(path: Path) -> Rows:
    """PROMPTS by its extension: ``.jsonl`` (one JSON object, or a JSON string: the prompt, a line),
    ``.csv`` (a header row naming the fields), anything else text (one prompt a line). Blank lines
    are skipped everywhere, ``#`` lines in JSONL and text. A file that cannot be read is an InputError;
    a row that cannot be read is a ``BadRow``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"PROMPTS {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise InputError(f"cannot read PROMPTS {path} ({error.strerror or first_line(error)})") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = parse_jsonl(text)
    elif suffix == ".csv":
        rows = parse_csv(text)
    else:
        rows = parse_text(text)
    if not rows.rows and not rows.bad:
        raise InputError(f"PROMPTS {path} has no rows: write one prompt a line (or JSONL, or CSV with a header)")
    return rows


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_text(text: str) -> Rows:
    rows = Rows()
    for number, line in enumerate(_lines(text), 1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            rows.rows.append(Row(len(rows.rows) + 1, number, {"prompt": prompt}))
    return rows


def parse_jsonl(text: str) -> Rows:
    rows, index = Rows(), 0
    for number, line in enumerate(_lines(text), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        index += 1
        try:
            value = json.loads(line)
            if isinstance(value, str):
                value = {"prompt": value}
            if not isinstance(value, dict):
                raise InputError(f"a row must be a JSON object or a string, got {json.dumps(value)[:40]}")
            rows.rows.append(Row(index, number, _typed(value, from_text=False)))
        except json.JSONDecodeError as error:
            rows.bad.append(BadRow(number, f"not JSON ({error.msg}: column {error.colno})", index))
        except InputError as error:
            rows.bad.append(BadRow(number, str(error), index))
    return rows


def parse_csv(text: str) -> Rows:
    rows, index = Rows(), 0
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    read = 0  # lines read so far: a row starts on the next one
    try:
        for cells in reader:
            start, read = read + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = _csv_header(cells, start)
                continue
            index += 1
            try:
                if len(cells) > len(header):
                    raise InputError(f"has {len(cells)} cells but the header names {len(header)} columns")
                values = {name: cell for name, cell in zip(header, cells, strict=False) if cell.strip()}
                rows.rows.append(Row(index, start, _typed(values, from_text=True)))
            except InputError as error:
                rows.bad.append(BadRow(start, str(error), index))
    except csv.Error as error:
        raise InputError(f"PROMPTS is not readable as CSV at line {reader.line_num} ({error})") from None
    return rows


def _csv_header(cells: list[str], line: int) -> list[str]:
    header = [cell.strip().lower() for cell in cells]
    for name in header:
        if name not in FIELDS:
            raise InputError(
                f"PROMPTS line {line}: the CSV header names an unknown column {name!r}; columns: {', '.join(FIELDS)}"
            )
    if len(set(header)) < len(header):
        raise InputError(f"PROMPTS line {line}: the CSV header names a column twice")
    if "prompt" not in header:
        raise InputError(f"PROMPTS line {line}: the CSV header has no prompt column (the first row is the header)")
    return header


def _typed(values: dict[str, Any], from_text: bool) -> dict[str, Any]:
    """A row's values by type: whole numbers, numbers, text. ``None`` (JSON null) means unset."""
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FIELDS:
            raise InputError(f"unknown field {name!r}; fields: {', '.join(FIELDS)}")
        if value is None:
            continue
        if name in WHOLE_FIELDS:
            typed[name] = _whole(value, name, from_text)
        elif name in NUMBER_FIELDS:
            typed[name] = _number(value, name, from_text)
        elif from_text or isinstance(value, str):
            typed[name] = str(value).strip() if name != "prompt" else str(value)
        else:
            raise InputError(f"{name} must be text, got {json.dumps(value)}")
    return typed


def _whole(value: Any, name: str, from_text: bool) -> int:
    if from_text:
        try:
            return int(str(value).strip())
        except ValueError:
            raise InputError(f"{name} must be a whole number, got {str(value).strip()!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number, got {json.dumps(value)}")
    return value


def _number(value: Any, name: str, from_text: bool) -> float:
    if from_text:
        try:
            return float(str(value).strip())
        except ValueError:
            raise InputError(f"{name} must be a number, got {str(value).strip()!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {json.dumps(value)}")
    return float(value)


# --- plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """What a row does not set: lcm-run batch's options. None: the bundle's (steps, guidance, size)
    or the task's (strength: 0.8 for image-to-image, 1.0 for inpainting)."""

    seed: int = 0  # rows without a seed get row_seed(seed, row)
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    num_images: int = 1
    strength: float | None = None
    negative_prompt: str | None = None


@dataclass(frozen=True)
class BundleDefaults:
    """The bundle's facts a plan needs; ``from_folder`` reads them without loading a model."""

    steps: int
    guidance: float
    size: int
    multiple: int
    min_side: int = 0
    max_steps: int = MAX_STEPS  # the scheduler's original_inference_steps: no image runs more

    @classmethod
    def from_folder(cls, folder: ModelFolder) -> BundleDefaults:
        facts = folder.facts
        return cls(
            facts.default_steps,
            float(facts.default_guidance_scale),
            facts.default_image_size,
            folder.size_multiple,
            folder.min_side,
            min(folder.scheduler.original_inference_steps, MAX_STEPS),  # from_dict: at most the train steps
        )


@dataclass(frozen=True)
class ImageTask:
    """One image to make: everything that decides it, and where it goes (a file name inside DIR)."""

    row: int
    line: int
    k: int  # 1..num_images; seed = row seed + k - 1
    file: str
    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    strength: float | None  # None: text-to-image
    image: str | None = None  # the input picture's path (image-to-image; with mask, inpainting)
    mask: str | None = None
    image_hash: str | None = None  # sha256 of the file, 12 hex digits, as the PNG metadata records it
    mask_hash: str | None = None
    name: str | None = None
    count: int = 1  # the row's num_images

    @property
    def kind(self) -> str:
        return "text-to-image" if self.image is None else "image-to-image" if self.mask is None else "inpainting"

    def fingerprint(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in FINGERPRINT}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageTask:
        return cls(**{item.name: data[item.name] for item in fields(cls) if item.name in data})


@dataclass
class Plan:
    tasks: list[ImageTask] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


def row_seed(seed: int, row: int) -> int:
    """The seed of a row that sets none: the first 32 bits of sha256("lcm-run batch <seed> <row>"), below
    SEED_LIMIT, so that a row's images depend only on --seed and its own position, however the job is
    split or resumed."""
    digest = hashlib.sha256(f"lcm-run batch {seed} {row}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # 4 bytes: below SEED_LIMIT, 2**32


def safe_name(name: str) -> str:
    """A row's name as a file name: letters, digits, ``.``, ``_`` and ``-``; anything else becomes
    ``_``; no leading dot (no hidden files, no ``..``), at most MAX_NAME characters."""
    cleaned = re.sub(r"[^\w.-]+", "_", name.strip(), flags=re.ASCII).lstrip(".")[:MAX_NAME]
    if not cleaned.strip("_-"):
        raise InputError(f"name {name!r} has no letter or digit to make a file name of")
    return cleaned


def check_defaults(defaults: Defaults, facts: BundleDefaults) -> None:
    """The command line's defaults, checked once (InputError naming the option) rather than per row."""
    if defaults.seed < 0:
        raise InputError(f"--seed must be 0 or more, got {defaults.seed}")
    if defaults.steps is not None:
        # Checked here, not per image: every image would fail, and the job would keep the bad --steps.
        validation.whole_number(defaults.steps, "--steps", 1, facts.max_steps, hint=STEPS_HINT)
    if defaults.guidance is not None:
        validation.real_number(defaults.guidance, "--guidance", 0.0, validation.MAX_GUIDANCE)
    for name, side in (("--width", defaults.width), ("--height", defaults.height)):
        if side is not None:
            validation.image_side(side, name, facts.multiple, facts.min_side)
    validation.whole_number(defaults.num_images, "--num-images", 1, MAX_IMAGES_PER_ROW)
    if defaults.strength is not None:
        validation.real_number(defaults.strength, "--strength", 0.0, 1.0, low_open=True)


class _Pictures:
    """Input pictures read once each: their hash and size (not their pixels: a job may name thousands)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.seen: dict[tuple[str, str], tuple[str, tuple[int, int]]] = {}

    def path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    def inspect(self, value: str, argument: str) -> tuple[str, str, tuple[int, int]]:
        from .image_input import digest, open_image

        path = self.path(value)
        key = (str(path), argument)
        if key not in self.seen:
            picture = open_image(path, argument)
            self.seen[key] = (digest(str(path)), picture.size)
        image_hash, size = self.seen[key]
        return str(path), image_hash, size


def plan(rows: Sequence[Row], defaults: Defaults, facts: BundleDefaults, base: Path) -> Plan:
    """One task per image of every good row, in row order; a row that cannot be made is a BadRow.
    ``base``: the folder relative ``image`` and ``mask`` paths are in (PROMPTS' own)."""
    result, pictures = Plan(), _Pictures(base)
    stems: dict[str, int] = {}  # a file stem, casefolded (case-insensitive file systems) -> its row's line
    for row in rows:
        try:
            tasks = _plan_row(row, defaults, facts, pictures)
            stem = tasks[0].file.rsplit("-", 1)[0]
            if stem.casefold() in stems:
                raise InputError(
                    f"its files ({stem}-1.png...) would be line {stems[stem.casefold()]}'s too; "
                    "give the rows different names"
                )
            stems[stem.casefold()] = row.line
            result.tasks.extend(tasks)
        except InputError as error:
            result.bad.append(BadRow(row.line, str(error), row.row))
    return result


def _plan_row(row: Row, defaults: Defaults, facts: BundleDefaults, pictures: _Pictures) -> list[ImageTask]:
    values = row.values
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("no prompt (every row needs one)")
    image, mask = values.get("image"), values.get("mask")
    if mask is not None and image is None:
        raise InputError("mask needs image: the mask says where to repaint that picture")
    if image is None and "strength" in values:
        raise InputError("strength only applies with image")
    if image is not None and mask is None and ("width" in values or "height" in values):
        raise InputError("image-to-image takes its size from image; resize the picture, or drop width/height")

    seed = values["seed"] if "seed" in values else row_seed(defaults.seed, row.row)
    seed = validation.whole_number(seed, "seed", 0, MAX_SEED - 1)
    steps = validation.whole_number(
        _pick(values, "steps", defaults.steps, facts.steps), "steps", 1, facts.max_steps, hint=STEPS_HINT
    )
    guidance = validation.real_number(
        _pick(values, "guidance", defaults.guidance, facts.guidance), "guidance", 0.0, validation.MAX_GUIDANCE
    )
    count = validation.whole_number(values.get("num_images", defaults.num_images), "num_images", 1, MAX_IMAGES_PER_ROW)
    negative = values.get("negative_prompt", defaults.negative_prompt) or None
    stem = safe_name(values["name"]) if "name" in values else str(row.row)

    strength: float | None = None
    image_path = mask_path = image_hash = mask_hash = None
    if image is None:
        height, width = _size(values, defaults, facts)
    else:
        from .img2img import DEFAULT_STRENGTH as IMG2IMG_STRENGTH
        from .inpaint import DEFAULT_STRENGTH as INPAINT_STRENGTH

        image_path, image_hash, image_size = pictures.inspect(image, "image")
        task_default = INPAINT_STRENGTH if mask is not None else IMG2IMG_STRENGTH
        strength = validation.strength(_pick(values, "strength", defaults.strength, task_default))
        if mask is None:
            from .image_input import default_size

            height, width = default_size(image_path, facts.multiple)
        else:
            mask_path, mask_hash, mask_size = pictures.inspect(mask, "mask")
            if mask_size != image_size:
                raise InputError(
                    f"mask is {mask_size[0]}x{mask_size[1]} but image is {image_size[0]}x{image_size[1]}; "
                    "use a mask of the picture's size"
                )
            height, width = _size(values, defaults, facts)
    return [
        ImageTask(
            row=row.row,
            line=row.line,
            k=k,
            file=f"{stem}-{k}.png",
            prompt=prompt,
            negative_prompt=negative,
            seed=image_seed(seed, k - 1),
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            strength=strength,
            image=image_path,
            mask=mask_path,
            image_hash=image_hash,
            mask_hash=mask_hash,
            name=values.get("name"),
            count=count,
        )
        for k in range(1, count + 1)
    ]


def _pick(values: dict[str, Any], name: str, default: Any, fallback: Any) -> Any:
    if name in values:
        return values[name]
    return fallback if default is None else default


def _size(values: dict[str, Any], defaults: Defaults, facts: BundleDefaults) -> tuple[int, int]:
    height = _pick(values, "height", defaults.height, facts.size)
    width = _pick(values, "width", defaults.width, facts.size)
    return validation.image_size(height, width, facts.multiple, facts.min_side)

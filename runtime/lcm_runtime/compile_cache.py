"""Start from OpenVINO's compile cache without reading and hashing the model first.

OpenVINO's CACHE_DIR names each compiled blob by a hash of the whole ov.Model, weights included.
Even on a cache hit, a new process therefore reads the IR, reshapes it and hashes 1.7 GB of UNet
weights before it imports the blob: about 0.4 s of every cold start. What identifies a compiled
model is known without any of that: the IR files (path, size, modification time), the input
shapes, the device, the compile properties and the OpenVINO version.

So beside OpenVINO's blobs we keep a small index from that key to the blob OpenVINO wrote (or read)
on the first compile, and later import the blob directly. OpenVINO still writes and owns the blobs:
a blob's file starts with one line of OpenVINO's header, followed by the plugin's stream, which is
what ``Core.import_model`` takes. Anything unexpected (an unknown header, a blob replaced or gone, a
failed import) drops the index entry, and the model is compiled the usual way.

OpenVINO never deletes a blob, and a UNet's is 1.7 GB: every re-export of a bundle would leave
one behind for good. An entry whose IR files are gone or changed can never be imported again, so
whenever a new blob is written, the blobs only such stale entries use are deleted (``prune_stale``).

Each execution precision has a folder of its own under the cache root (``precision_folder``):
OpenVINO 2026.4's CPU plugin leaves INFERENCE_PRECISION_HINT out of its blob hash, so an f32 and a
bf16 compile of one IR in one CACHE_DIR would share a blob, and the bf16 run of the f32 blob can give
NaN (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .file_pages import file_mappings
from .openvino_runtime import ov

INDEX_FOLDER = "lcm-index"
BLOB_SUFFIX = ".blob"
HEADER_START = b"<?xml"
HEADER_TAG = b"<compiled_blob "
UNPADDED_HEADER = b'header_size_alignment="0"'
HEADER_LIMIT = 64 * 1024
INDEXED_DEVICES = ("CPU",)  # the only plugin whose blobs were checked here


class ReadOnlyBlob:
    """A cache blob mapped read-only and shared, as a uint8 array OpenVINO can import from.

    The CPU plugin keeps reading some constants in place from the imported buffer, so the mapping
    must outlive the compiled model. Read-only and shared, its pages are the page cache's: the
    file_pages module may drop them from the resident set like the IR's.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            self._mapping = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)
        self._read_only = np.frombuffer(self._mapping, dtype=np.uint8)  # holds the mapping's buffer
        address = self._read_only.__array_interface__["data"][0]
        # OpenVINO takes only a writable array, but never writes to an import stream; a write
        # would fault on the read-only pages rather than change the file.
        self.array = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))

    def close(self) -> None:
        # Dropping the arrays releases the mapping's buffer so that it can close; a closed blob is
        # never read again, so its attributes stay typed as arrays.
        self.array = self._read_only = None  # type: ignore[assignment]
        self._mapping.close()


@dataclass(frozen=True)
class CacheEntry:
    """One index entry: which model's compiled blob it names, and whether it can still be used."""

    key: str
    blob: str
    blob_bytes: int | None  # None: the blob is gone
    model: str | None  # the IR it was compiled from; None for entries written before this was recorded
    stale: bool  # its IR files are gone or changed, so no process will import it again
    last_used: float  # when a process last compiled or imported it (seconds since the epoch)


def _ir_stats(xml: Path) -> list[list[str | int]]:
    """The IR files' identity: path, size and modification time of the .xml and the .bin."""
    xml = Path(os.path.realpath(xml))
    stats: list[list[str | int]] = []
    for path in (xml, xml.with_suffix(".bin")):
        info = path.stat()
        stats.append([os.fspath(path), info.st_size, info.st_mtime_ns])
    return stats


def _still_there(stats: list[Any]) -> bool:
    try:
        return _ir_stats(Path(stats[0][0])) == [list(item) for item in stats]
    except (OSError, IndexError, TypeError):
        return False


def plugin_stream_offset(head: bytes) -> int | None:
    """Where the plugin's stream starts in a blob beginning with ``head``; None if the header is unknown."""
    end = head.find(b"\n")
    header = head[:end]
    if end < 0 or not header.startswith(HEADER_START) or HEADER_TAG not in header or UNPADDED_HEADER not in header:
        return None
    return end + 1


def precision_folder(root: Path, execution_precision: str) -> Path:
    """Where the blobs compiled to run at this precision (f32, bf16, f16) live under the cache root."""
    return Path(root) / execution_precision


def cache_folders(root: Path) -> list[Path]:
    """Every folder under the cache root that holds blobs or an index: the per-precision folders, and
    the root itself where an older lcm-openvino wrote its blobs there."""
    root = Path(root)
    try:
        candidates = [root, *sorted(path for path in root.iterdir() if path.is_dir() and path.name != INDEX_FOLDER)]
    except OSError:
        return []
    return [folder for folder in candidates if (folder / INDEX_FOLDER).is_dir() or CompileCache(folder)._blob_files()]


class CompileCache:
    """An index over OpenVINO's compile cache in ``folder`` (the folder given to CACHE_DIR)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.index = self.folder / INDEX_FOLDER

    def key(
        self,
        core: ov.Core,
        xml: Path,
        shapes: Mapping[str, list[int]],
        device: str,
        config: Mapping[str, Any],
        extra_outputs: Sequence[str] = (),
    ) -> str | None:
        """What identifies the compiled model, hashed; None where the index is not used. ``extra_outputs``
        (tensors made outputs before compiling) count only when there are some: older keys stay valid."""
        if device.upper() not in INDEXED_DEVICES:
            return None
        try:
            stats = [tuple(item) for item in _ir_stats(xml)]
            device_name = str(core.get_property(device, "FULL_DEVICE_NAME"))
        except (OSError, RuntimeError):
            return None
        identity = {
            "files": stats,
            "shapes": {name: list(shape) for name, shape in sorted(shapes.items())},
            "device": [device, device_name],
            "config": {name: str(value) for name, value in sorted(config.items())},
            "openvino": ov.get_version(),
            **({"extra_outputs": list(extra_outputs)} if extra_outputs else {}),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def load(
        self, core: ov.Core, key: str, device: str, config: Mapping[str, Any]
    ) -> tuple[ov.CompiledModel, ReadOnlyBlob] | None:
        """Import the blob the index names for ``key``; None (and the entry dropped) if that fails."""
        entry = self.index / f"{key}.json"
        try:
            record = json.loads(entry.read_text(encoding="utf-8"))
            blob_path = self.folder / record["blob"]
            stat = blob_path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (record["size"], record["mtime_ns"]):
                raise ValueError("the blob changed since it was indexed")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            self._forget(entry)
            return None
        blob = None
        try:
            blob = ReadOnlyBlob(blob_path)
            offset = plugin_stream_offset(bytes(blob.array[:HEADER_LIMIT]))
            if offset is None:
                raise ValueError("unknown blob header")
            stream = ov.Tensor(blob.array[offset:], shared_memory=True)
            compiled = core.import_model(stream, device, dict(config))
        except (OSError, ValueError, RuntimeError):
            if blob is not None:
                blob.close()
            self._forget(entry)
            return None
        try:
            os.utime(entry)  # its last use, for `lcm-run cache`
        except OSError:
            pass
        return compiled, blob

    def compile(
        self, core: ov.Core, model: ov.Model, key: str, device: str, config: Mapping[str, Any], xml: Path
    ) -> ov.CompiledModel:
        """Compile through OpenVINO's cache (CACHE_DIR is this folder) and index the blob it used;
        after writing a new blob, delete those that only stale entries use."""
        blobs_before = self._blob_files()
        mapped_before = _mapped_blobs(self.folder)
        compiled = core.compile_model(model, device, dict(config))
        written = self._blob_files() - blobs_before
        read = _mapped_blobs(self.folder) - mapped_before
        used = written or read
        if len(used) == 1:
            self._record(key, next(iter(used)), xml)
        if written:
            self.prune_stale()
        return compiled

    def entries(self) -> list[CacheEntry]:
        """The index's entries, most recently used first (unreadable ones are skipped)."""
        found = []
        for path in self._entry_files():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                last_used = path.stat().st_mtime
                blob = str(record["blob"])
                files = record.get("files")
                model = str(files[0][0]) if files else None
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                continue
            if os.path.basename(blob) != blob or not blob.endswith(BLOB_SUFFIX):
                continue  # never act on a path outside this folder
            try:
                blob_bytes = (self.folder / blob).stat().st_size
            except OSError:
                blob_bytes = None
            found.append(
                CacheEntry(
                    key=path.stem,
                    blob=blob,
                    blob_bytes=blob_bytes,
                    model=model,
                    stale=bool(files) and not _still_there(files),
                    last_used=last_used,
                )
            )
        return sorted(found, key=lambda entry: entry.last_used, reverse=True)

    def blob_bytes(self) -> int:
        """The size of every blob in the folder, indexed or not."""
        total = 0
        for name in self._blob_files():
            try:
                total += (self.folder / name).stat().st_size
            except OSError:
                pass
        return total

    def prune_stale(self) -> tuple[int, int]:
        """Drop the entries whose IR files are gone or changed, and the blobs no other entry uses.

        Returns (entries dropped, bytes freed). Blobs without an entry, and entries from before the
        IR files were recorded, are left alone: whether they are still useful cannot be told.
        """
        entries = self.entries()
        still_used = {entry.blob for entry in entries if not entry.stale}
        stale = [entry for entry in entries if entry.stale]
        for entry in stale:
            self._forget(self.index / f"{entry.key}.json")
        freed = 0
        for blob, size in {entry.blob: entry.blob_bytes for entry in stale}.items():
            if blob in still_used or size is None:
                continue
            try:
                (self.folder / blob).unlink()
                freed += size
            except OSError:
                pass
        return len(stale), freed

    def clear(self) -> int:
        """Delete every blob in the folder and the index; returns the bytes freed."""
        freed = 0
        for name in self._blob_files():
            try:
                size = (self.folder / name).stat().st_size
                (self.folder / name).unlink()
                freed += size
            except OSError:
                pass
        for path in self._entry_files():
            self._forget(path)
        return freed

    def _entry_files(self) -> list[Path]:
        try:
            return list(self.index.glob("*.json"))
        except OSError:
            return []

    def _blob_files(self) -> set[str]:
        try:
            return {path.name for path in self.folder.glob(f"*{BLOB_SUFFIX}")}
        except OSError:
            return set()

    def _record(self, key: str, blob_name: str, xml: Path) -> None:
        try:
            stat = (self.folder / blob_name).stat()
            self.index.mkdir(exist_ok=True)
            record = {"blob": blob_name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "files": _ir_stats(xml)}
            # Written aside and renamed, so a reader never sees half an entry.
            with tempfile.NamedTemporaryFile("w", dir=self.index, suffix=".tmp", delete=False, encoding="utf-8") as tmp:
                json.dump(record, tmp)
            os.replace(tmp.name, self.index / f"{key}.json")
        except OSError:
            pass  # an unwritable index only costs start-up time

    @staticmethod
    def _forget(entry: Path) -> None:
        try:
            entry.unlink()
        except OSError:
            pass


def _mapped_blobs(folder: Path) -> set[str]:
    """Names of this folder's blob files that this process has mapped (OpenVINO maps a cache hit)."""
    return {os.path.basename(path) for *_range, path in file_mappings([folder]) if path.endswith(BLOB_SUFFIX)}

"""Mapped model files leave the resident set without changing what the mapping reads."""

import mmap
import sys
import time

import numpy as np
import pytest

from lcm_runtime import file_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps is Linux only")

SIZE = 32 * 2**20


def resident_bytes(start: int) -> int:
    """Rss of the mapping that begins at this address, from /proc/self/smaps."""
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                inside = int(head.split("-")[0], 16) == start
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError("mapping not found")


def mapped_file(folder, access):
    path = folder / "weights.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes())
    handle = open(path, "r+b")
    mapping = mmap.mmap(handle.fileno(), 0, access=access)
    view = np.frombuffer(mapping, dtype=np.uint8)
    start = view.__array_interface__["data"][0]
    return path, handle, mapping, view, start


def test_read_only_file_pages_are_dropped_and_read_back_unchanged(tmp_path):
    path, handle, mapping, view, start = mapped_file(tmp_path, mmap.ACCESS_READ)
    checksum = int(view.sum(dtype=np.uint64))
    assert resident_bytes(start) > SIZE // 2

    covered = file_pages.release([tmp_path])

    assert covered >= SIZE
    assert resident_bytes(start) < SIZE // 8
    assert int(view.sum(dtype=np.uint64)) == checksum  # faulted back in from the page cache
    del view
    mapping.close()
    handle.close()


def test_files_outside_the_folders_and_writable_mappings_are_kept(tmp_path):
    inside, outside = tmp_path / "bundle", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    _, handle, mapping, view, start = mapped_file(outside, mmap.ACCESS_READ)
    view.sum()
    assert file_pages.release([inside]) == 0
    assert resident_bytes(start) > SIZE // 2
    del view
    mapping.close()
    handle.close()

    _, handle, mapping, view, start = mapped_file(inside, mmap.ACCESS_COPY)
    mapping[:4] = b"edit"  # private copy-on-write pages: dropping them would lose this
    view.sum()
    assert file_pages.release([inside]) == 0
    assert mapping[:4] == b"edit"
    del view
    mapping.close()
    handle.close()


def test_pages_are_dropped_while_a_block_runs(tmp_path):
    _, handle, mapping, view, start = mapped_file(tmp_path, mmap.ACCESS_READ)
    with file_pages.released_while_running([tmp_path], interval=0.01):
        view.sum()
        deadline = time.monotonic() + 5
        while resident_bytes(start) >= SIZE // 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert resident_bytes(start) < SIZE // 8  # dropped by the background thread, inside the block
    del view
    mapping.close()
    handle.close()


def resident_bytes_under(folder) -> tuple[int, int]:
    """(bytes mapped, bytes of them resident) for files mapped from inside this folder."""
    prefix = str(folder.resolve()) + "/"
    mapped = total = 0
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps:
        inside = False
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                inside = len(fields) >= 6 and fields[5].startswith(prefix)
                if inside:
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    mapped += end - start
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return mapped, total


def test_pipeline_keeps_no_weight_file_pages_resident(tiny_bundle_fp32, tmp_path):
    from lcm_runtime import LCMPipeline

    cache = tmp_path / "cache"
    # The first pipeline compiles from the IR files it maps, the second from the cache blobs.
    for folder in (tiny_bundle_fp32, cache):
        pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, cache_dir=cache)
        pipe("a red cube", num_inference_steps=1, height=64, width=64, generator=0)
        mapped, resident = resident_bytes_under(folder)
        assert mapped > 0, f"OpenVINO no longer maps files from {folder}: this test checks nothing"
        # Without the release all of it stays resident; what is left is the few small constants
        # (biases, norms) the plugin reads in place at every inference.
        assert resident < 0.4 * mapped, f"{resident} of {mapped} mapped bytes of {folder} still resident"
        del pipe

"""The compile cache's index: a new process imports the blob OpenVINO wrote, without reading the IR."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lcm_runtime import LCMPipeline
from lcm_runtime.compile_cache import INDEX_FOLDER, CompileCache, plugin_stream_offset

COMPONENTS = {"text_encoder", "unet", "vae_decoder"}
F32 = "f32"  # the folder of the blobs compiled to run at f32, under the cache root
CALL = dict(num_inference_steps=2, height=64, width=64, generator=0, output_type="np")


def generate(bundle, cache, **options):
    pipe = LCMPipeline.from_pretrained(bundle, precision="f32", cache_dir=cache, **options)
    images = pipe("a red cube", **CALL).images
    return pipe, images


def index_entries(cache):
    """Every precision folder's index entries under the cache root."""
    return sorted(cache.glob(f"*/{INDEX_FOLDER}/*.json"))


def test_second_start_imports_every_model_through_the_index_with_the_same_image(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    first, first_images = generate(tiny_bundle_fp32, cache)
    assert first.started_from_cache_index() == dict.fromkeys(COMPONENTS, False)
    entries = index_entries(cache)
    assert len(entries) == 3
    for entry in entries:
        assert (entry.parent.parent / json.loads(entry.read_text())["blob"]).is_file()

    second, second_images = generate(tiny_bundle_fp32, cache)
    assert second.started_from_cache_index() == dict.fromkeys(COMPONENTS, True)
    np.testing.assert_array_equal(second_images, first_images)
    assert second.execution_precision() == first.execution_precision()


def test_index_lost_is_rebuilt_from_openvinos_cache_hit(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    generate(tiny_bundle_fp32, cache)
    for entry in index_entries(cache):
        entry.unlink()
    pipe, _ = generate(tiny_bundle_fp32, cache)  # OpenVINO's own cache hit: its mapped blob is recorded
    assert not any(pipe.started_from_cache_index().values())
    assert len(index_entries(cache)) == 3
    assert all(generate(tiny_bundle_fp32, cache)[0].started_from_cache_index().values())


@pytest.mark.parametrize("damage", ["garbage entry", "blob gone", "blob rewritten"])
def test_a_broken_index_entry_falls_back_to_compiling_and_the_same_image(tiny_bundle_fp32, tmp_path, damage):
    cache = tmp_path / "cache"
    _, reference = generate(tiny_bundle_fp32, cache)
    for entry in index_entries(cache):
        blob = cache / F32 / json.loads(entry.read_text())["blob"]
        if damage == "garbage entry":
            entry.write_text("{not json")
        elif damage == "blob gone":
            blob.unlink()
        else:  # even the same bytes written again: the recorded modification time no longer matches
            content = blob.read_bytes()
            blob.chmod(0o600)
            blob.write_bytes(content)
    pipe, images = generate(tiny_bundle_fp32, cache)
    assert not any(pipe.started_from_cache_index().values())
    np.testing.assert_array_equal(images, reference)
    assert all(generate(tiny_bundle_fp32, cache)[0].started_from_cache_index().values())  # recorded anew


def test_another_size_or_precision_gets_its_own_entry(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    generate(tiny_bundle_fp32, cache)
    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=cache)
    pipe("a red cube", **{**CALL, "height": 128})
    # The text encoder does not depend on the size: only the UNet and the VAE are new.
    assert pipe.started_from_cache_index() == {"text_encoder": True, "unet": False, "vae_decoder": False}
    assert len(index_entries(cache)) == 5
    bf16 = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="bf16", cache_dir=cache)
    # Its own folder: OpenVINO 2026.4's CPU blob hash leaves INFERENCE_PRECISION_HINT out, so in one
    # folder the bf16 compile imported the f32 blob, which gave NaN in 3 of 4 runs (docs/performance.md).
    for _ in range(3):
        image = bf16("a red cube", **CALL).images
        assert np.isfinite(image).all()
    assert not any(bf16.started_from_cache_index().values())
    assert len(index_entries(cache)) == 8
    assert len(list((cache / "bf16").glob("*.blob"))) == 3
    again = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="bf16", cache_dir=cache)
    np.testing.assert_array_equal(again("a red cube", **CALL).images, image)
    assert all(again.started_from_cache_index().values())


def test_no_cache_means_no_index(tiny_bundle_fp32, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    pipe, _ = generate(tiny_bundle_fp32, False)
    assert not any(pipe.started_from_cache_index().values())
    assert not any(tmp_path.rglob(INDEX_FOLDER))


def test_virtual_devices_are_not_indexed(tiny_bundle_fp32, tmp_path):
    import openvino as ov

    cache = CompileCache(tmp_path)
    xml = tiny_bundle_fp32 / "unet" / "openvino_model.xml"
    assert cache.key(ov.Core(), xml, {}, "CPU", {}) is not None  # the same model on the CPU is indexed
    assert cache.key(ov.Core(), xml, {}, "AUTO", {}) is None


@pytest.mark.parametrize(
    "head, offset",
    [
        (b'<?xml version="1.0"?><compiled_blob ie_version="x" header_size_alignment="0"/>\nRR_UPCVO', 79),
        (b'<?xml version="1.0"?><compiled_blob ie_version="x" header_size_alignment="64"/>\nRR_UPCVO', None),
        (b"RR_UPCVO plugin stream without a header", None),
        (b'<?xml version="1.0"?><compiled_blob ie_version="x" header_size_alignment="0"/>', None),
        (b'<?xml version="1.0"?><other/>\nRR_UPCVO <compiled_blob header_size_alignment="0"', None),
    ],
)
def test_plugin_stream_offset_only_trusts_the_known_header(head, offset):
    assert plugin_stream_offset(head) == offset


def bundle_copy(tiny_bundle, folder):
    target = folder / "bundle"
    shutil.copytree(tiny_bundle, target)
    return target


def blobs(cache):
    return sorted(path.name for path in cache.glob("*/*.blob"))


def change_unet_weights(bundle):
    """What a re-export with other weights does to the UNet: new content, new modification time."""
    weights = bundle / "unet" / "openvino_model.bin"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0x01
    weights.write_bytes(bytes(content))


def test_a_reexported_bundle_leaves_no_stale_blob_behind(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    bundle = bundle_copy(tiny_bundle_fp32, tmp_path)
    generate(bundle, cache)
    before = blobs(cache)
    unet_blob = next(entry.blob for entry in CompileCache(cache / F32).entries() if "unet" in entry.model)

    change_unet_weights(bundle)
    pipe, _ = generate(bundle, cache)
    assert pipe.started_from_cache_index() == {"text_encoder": True, "unet": False, "vae_decoder": True}
    after = blobs(cache)
    assert len(after) == len(before) == 3
    assert unet_blob not in after  # the old UNet's blob went when the new one was written
    entries = CompileCache(cache / F32).entries()
    assert len(entries) == 3 and not any(entry.stale for entry in entries)


def test_prune_keeps_a_blob_another_bundle_still_uses(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    first = bundle_copy(tiny_bundle_fp32, tmp_path / "a")
    second = bundle_copy(tiny_bundle_fp32, tmp_path / "b")
    generate(first, cache)
    generate(second, cache)  # the same models: OpenVINO's cache hit, a second entry for each blob
    assert len(CompileCache(cache / F32).entries()) == 6 and len(blobs(cache)) == 3

    shutil.rmtree(first)
    assert sum(entry.stale for entry in CompileCache(cache / F32).entries()) == 3
    assert CompileCache(cache / F32).prune_stale() == (3, 0)
    assert len(blobs(cache)) == 3
    assert all(generate(second, cache)[0].started_from_cache_index().values())

    shutil.rmtree(second)
    dropped, freed = CompileCache(cache / F32).prune_stale()
    assert dropped == 3 and freed > 0
    assert blobs(cache) == [] and CompileCache(cache / F32).entries() == []


def test_entries_from_before_the_files_were_recorded_are_kept(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    generate(tiny_bundle_fp32, cache)
    for entry in index_entries(cache):
        record = json.loads(entry.read_text())
        del record["files"]
        entry.write_text(json.dumps(record))
    assert CompileCache(cache / F32).prune_stale() == (0, 0)
    assert all(entry.model is None and not entry.stale for entry in CompileCache(cache / F32).entries())
    assert all(generate(tiny_bundle_fp32, cache)[0].started_from_cache_index().values())


def lcm_run_cache(*args, cache):
    env = {**os.environ, "LCM_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "lcm_runtime.cli", "cache", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_lcm_run_cache_lists_prunes_and_clears(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    bundle = bundle_copy(tiny_bundle_fp32, tmp_path)
    generate(bundle, cache)

    listed = lcm_run_cache(cache=cache)
    assert listed.returncode == 0, listed.stderr
    for component in COMPONENTS:
        assert str(bundle.resolve() / component / "openvino_model.xml") in listed.stdout
    assert "stale" not in listed.stdout.replace("deletes stale ones", "")

    change_unet_weights(bundle)
    assert "(stale: its bundle files are gone or changed)" in lcm_run_cache(cache=cache).stdout
    pruned = lcm_run_cache("--prune", cache=cache)
    assert pruned.returncode == 0 and "deleted 1 stale entries" in pruned.stdout
    assert len(blobs(cache)) == 2

    cleared = lcm_run_cache("--clear", cache=cache)
    assert cleared.returncode == 0, cleared.stderr
    assert blobs(cache) == [] and index_entries(cache) == []


def test_lcm_run_cache_lists_and_clears_blobs_an_older_version_left_in_the_root(tiny_bundle_fp32, tmp_path):
    cache = tmp_path / "cache"
    generate(tiny_bundle_fp32, cache)
    for path in (cache / F32).iterdir():  # the layout before one folder per precision
        path.rename(cache / path.name)
    (cache / F32).rmdir()
    listed = lcm_run_cache(cache=cache)
    assert listed.returncode == 0, listed.stderr
    assert "(older, one folder for all)" in listed.stdout
    assert str(tiny_bundle_fp32.resolve() / "unet" / "openvino_model.xml") in listed.stdout
    assert lcm_run_cache("--clear", cache=cache).returncode == 0
    assert list(cache.glob("*.blob")) == [] and list(cache.glob(f"{INDEX_FOLDER}/*.json")) == []


@pytest.mark.parametrize(
    "args, cache, words",
    [
        (["--prune", "--clear"], "CACHE", ["--prune", "--clear"]),
        ([], "off", ["cache is off", "LCM_CACHE_DIR"]),
    ],
)
def test_lcm_run_cache_bad_input(tmp_path, args, cache, words):
    result = lcm_run_cache(*args, cache=tmp_path if cache == "CACHE" else cache)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), result.stderr

"""A failed or interrupted export leaves OUT absent (or untouched) and no staging folder behind."""

from __future__ import annotations

import errno

import pytest

pytest.importorskip("torch")

from lcm_export.exporter import ExportOptions, Progress, export_bundle  # noqa: E402
from lcm_export.writer import OutputError  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tiny_pipeline_dir):
    from lcm_export.source import load_source

    return load_source(str(tiny_pipeline_dir))


def _fail_at(stage_prefix, error):
    def notify(event, name, _seconds):
        if event == "start" and name.startswith(stage_prefix):
            raise error

    return Progress(notify)


def _existing_out(parent):
    """An earlier bundle at OUT (what --force replaces), with a file of the user's in it."""
    out = parent / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "keep.txt").write_text("precious")
    return out


@pytest.mark.parametrize(
    "stage,error",
    [("unet", RuntimeError("injected")), ("verify", KeyboardInterrupt())],  # half-written; complete but unverified
    ids=["error-mid-export", "interrupt-before-rename"],
)
def test_failure_leaves_nothing(loaded, tmp_path, error, stage):
    out = tmp_path / "bundle"
    with pytest.raises(type(error)):
        export_bundle(loaded, out, ExportOptions(weights="fp32"), _fail_at(stage, error))
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_existing_out_untouched(loaded, tmp_path):
    out = _existing_out(tmp_path)
    with pytest.raises(RuntimeError):
        export_bundle(
            loaded, out, ExportOptions(weights="fp32", force=True), _fail_at("vae_decoder", RuntimeError("boom"))
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "manifest.json"]
    assert (out / "keep.txt").read_text() == "precious"


def test_existing_out_needs_force_and_is_then_replaced(loaded, tmp_path, tiny_bundle_fp32):
    out = _existing_out(tmp_path)
    with pytest.raises(OutputError, match="--force"):
        export_bundle(loaded, out, ExportOptions(weights="fp32"))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "manifest.json"]
    export_bundle(loaded, out, ExportOptions(weights="fp32", force=True))
    assert not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    # Also a determinism check: the same export, done again in this process, is byte-identical.
    assert (out / "manifest.json").read_bytes() == (tiny_bundle_fp32 / "manifest.json").read_bytes()


@pytest.mark.parametrize("kept", ["thesis.txt", "sub/thesis.txt"])
def test_force_never_deletes_a_folder_that_is_not_a_bundle(loaded, tmp_path, kept):
    """--force replaces an earlier bundle; a folder without manifest.json or model_index.json may hold what
    a user made, so it is refused before any work, untouched. An empty folder is replaced."""
    out = tmp_path / "work"
    (out / kept).parent.mkdir(parents=True, exist_ok=True)
    (out / kept).write_text("precious")
    with pytest.raises(OutputError, match="is not a model bundle .* --force only replaces bundles") as error:
        export_bundle(loaded, out, ExportOptions(weights="fp32", force=True))
    assert "\n" not in str(error.value) and (out / kept).read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    empty = tmp_path / "empty"
    empty.mkdir()
    export_bundle(loaded, empty, ExportOptions(weights="fp32", force=True))
    assert (empty / "manifest.json").is_file()


def test_no_space_while_writing_is_one_clear_error(loaded, tmp_path, monkeypatch):
    import lcm_export.exporter as exporter

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporter, "save_ir", full_disk)
    with pytest.raises(OutputError, match="no space left"):
        export_bundle(loaded, tmp_path / "bundle", ExportOptions(weights="fp32"))
    assert list(tmp_path.iterdir()) == []


def test_not_enough_free_space_is_refused_before_writing(loaded, tmp_path, monkeypatch):
    import shutil

    import lcm_export.writer as writer

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda _path: usage._replace(free=1024))
    with pytest.raises(OutputError, match="not enough disk space"):
        export_bundle(loaded, tmp_path / "bundle", ExportOptions(weights="fp32"))
    assert list(tmp_path.iterdir()) == []


def test_staging_left_by_a_killed_export_is_cleaned_up(tmp_path):
    import subprocess
    import sys

    from lcm_export.writer import remove_abandoned_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    abandoned = tmp_path / f".lcm-export-bundle.{dead_pid}.tmp"
    (abandoned / "unet").mkdir(parents=True)
    backup = tmp_path / f".lcm-export-bundle.{dead_pid}.old"
    backup.mkdir()
    (backup / "keep.txt").write_text("previous bundle")
    other = tmp_path / ".lcm-export-other.1.tmp"  # another OUT's staging: not ours to touch
    other.mkdir()
    remove_abandoned_staging(tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lcm-export-other.1.tmp", "bundle"]
    assert (tmp_path / "bundle" / "keep.txt").read_text() == "previous bundle"

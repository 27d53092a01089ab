"""Every path a bundle names stays inside it: a manifest or a symlink pointing out is a malformed bundle.

`lcm-run verify` and `lcm-run` must refuse such a bundle in one line, before they stat or read
anything outside it (the files placed outside here would otherwise verify, or be loaded as weights).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, lcm_run

from lcm_runtime import bundle, loading
from lcm_runtime.errors import BundleError

REFETCH = "re-export or re-download the bundle"


@pytest.mark.parametrize(
    "name",
    [
        "../../../etc/hostname",
        "unet/../../x",
        "..",
        "/etc/hostname",
        "//server/share",
        "C:/Windows/win.ini",
        "c:x",
        "unet\\..\\..\\x",
        "\\\\server\\share",
        "",
        "./unet/x",
        "unet//x",
        "unet/",
        "unet/.",
        "a\nb",
        "a\x00b",
        "\ud800",
        "x" * 256,
        7,
        None,
        ["unet"],
    ],
)
def test_paths_that_are_not_plainly_inside_are_refused(name):
    assert bundle.bundle_path_problem(name) is not None


@pytest.mark.parametrize("name", ["unet/openvino_model.bin", "model_index.json", "é/ü.bin", "a b/c-d_e.f", "...x"])
def test_plain_relative_paths_are_accepted(name):
    assert bundle.bundle_path_problem(name) is None


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A bundle-like folder and a folder beside it with a file the bundle must never reach."""
    root, outside = tmp_path / "bundle", tmp_path / "outside"
    (root / "unet").mkdir(parents=True)
    (root / "store").mkdir()
    (root / "store" / "weights.bin").write_bytes(b"inside")
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"outside")
    return root, outside


def test_symlinks_that_stay_inside_are_followed(tree):
    root, _ = tree
    (root / "unet" / "relative.bin").symlink_to("../store/weights.bin")
    (root / "unet" / "absolute.bin").symlink_to(root.resolve() / "store" / "weights.bin")
    (root / "unet" / "chain.bin").symlink_to("relative.bin")
    (root / "linked").symlink_to("store")
    for name in ("unet/relative.bin", "unet/absolute.bin", "unet/chain.bin", "linked/weights.bin"):
        assert bundle.resolve_inside(root, name) == root.resolve() / "store" / "weights.bin", name
    missing = bundle.resolve_inside(root, "unet/none.bin")
    assert not missing.exists() and missing.parent == root.resolve() / "unet"
    assert not bundle.resolve_inside(root, "store/weights.bin/x").exists()  # under a file: missing, not an error


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda root, out: (root / "unet" / "w.bin").symlink_to("../../outside/secret.bin"), ["outside the bundle"]),
        (lambda root, out: (root / "unet" / "w.bin").symlink_to(out / "secret.bin"), ["outside the bundle"]),
        (lambda root, out: (root / "unet" / "w.bin").symlink_to("/etc/hostname"), ["outside the bundle"]),
        (lambda root, out: shutil.rmtree(root / "unet") or (root / "unet").symlink_to(out), ["outside the bundle"]),
        (
            lambda root, out: (root / "unet" / "w.bin").symlink_to("../store/../../outside/secret.bin"),
            ["outside the bundle"],
        ),
        (lambda root, out: (root / "unet" / "w.bin").symlink_to("w.bin"), ["symlink loop"]),
        (lambda root, out: (root / "unet" / "w.bin").mkdir(), ["folder where a file should be"]),
        (lambda root, out: os.mkfifo(root / "unet" / "w.bin"), ["not a regular file"]),
    ],
    ids=["relative-out", "absolute-out", "etc", "folder-out", "up-through-inside", "loop", "folder", "fifo"],
)
def test_paths_leading_out_or_to_non_files_are_malformed(tree, make, words):
    root, outside = tree
    make(root, outside)
    with pytest.raises(BundleError) as error:
        bundle.resolve_inside(root, "unet/w.bin")
    message = str(error.value)
    assert "unet/w.bin" in message and REFETCH in message and "\n" not in message, message
    for word in words:
        assert word in message, message


# --- through lcm-run, on a real bundle -------------------------------------------------------------


@pytest.fixture
def bundle_copy(tiny_bundle_fp32: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_fp32, target)
    return target


@pytest.fixture
def outside(bundle_copy: Path) -> Path:
    """Copies of bundle files beside the bundle: with the right sizes and checksums, so that a runtime
    that followed a path out of the bundle would find them valid rather than fail by luck."""
    folder = bundle_copy.parent / "outside"
    folder.mkdir()
    for name in (
        "unet/openvino_model.bin",
        "scheduler/c_out.npy",
        "tokenizer/tokenizer.json",
        bundle.MANIFEST_FILE,
        bundle.SCHEDULER_CONFIG,
    ):
        shutil.copy(bundle_copy / name, folder / Path(name).name)
    shutil.copytree(bundle_copy / "unet", folder / "unet")
    return folder


def edit_manifest(root: Path, edit) -> None:
    path = root / bundle.MANIFEST_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _entry_of(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": bundle.sha256_file(path)}


def _replace_with_symlink(path: Path, target: Path | str) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_bytes(b"x")


CASES = {
    # name: (break the bundle, words the one error line must contain)
    "traversal-entry": (
        lambda root, out: edit_manifest(
            root, lambda d: d["files"].update({"../outside/openvino_model.bin": _entry_of(out / "openvino_model.bin")})
        ),
        ["'../outside/openvino_model.bin'"],
    ),
    "etc-hostname-entry": (
        lambda root, out: edit_manifest(
            root, lambda d: d["files"].update({"../../../../../../../../etc/hostname": {"size": 1, "sha256": "0" * 64}})
        ),
        ["etc/hostname", "climbs out"],
    ),
    "absolute-entry": (
        lambda root, out: edit_manifest(
            root, lambda d: d["files"].update({str(out / "openvino_model.bin"): _entry_of(out / "openvino_model.bin")})
        ),
        ["absolute path"],
    ),
    "component-file": (
        lambda root, out: edit_manifest(
            root, lambda d: d["components"]["unet"].update({"file": "../outside/unet/openvino_model.xml"})
        ),
        ["'../outside/unet/openvino_model.xml'"],
    ),
    "entry-types": (
        lambda root, out: edit_manifest(
            root, lambda d: d["files"].update({"unet/openvino_model.bin": {"size": "big", "sha256": 5}})
        ),
        ["unet/openvino_model.bin", "size"],
    ),
    "symlinked-entry": (
        lambda root, out: _replace_with_symlink(root / "scheduler" / "c_out.npy", "../../outside/c_out.npy"),
        ["scheduler/c_out.npy", "outside the bundle"],
    ),
    "symlinked-weights": (
        lambda root, out: _replace_with_symlink(root / "unet" / "openvino_model.bin", out / "openvino_model.bin"),
        ["unet/openvino_model.bin", "outside the bundle"],
    ),
    "symlinked-folder": (
        lambda root, out: _replace_with_symlink(root / "unet", out / "unet"),
        ["unet/", "outside the bundle"],
    ),
    "symlinked-manifest": (
        lambda root, out: _replace_with_symlink(root / bundle.MANIFEST_FILE, out / bundle.MANIFEST_FILE),
        ["manifest.json", "outside the bundle"],
    ),
    "folder-for-file": (
        lambda root, out: _replace_with_folder(root / "scheduler" / "c_out.npy"),
        ["scheduler/c_out.npy", "folder where a file should be"],
    ),
    "manifest-is-folder": (
        lambda root, out: _replace_with_folder(root / bundle.MANIFEST_FILE),
        ["manifest.json", "folder where a file should be"],
    ),
    "fifo-for-file": (
        lambda root, out: (root / bundle.TOKENIZER_JSON).unlink() or os.mkfifo(root / bundle.TOKENIZER_JSON),
        [bundle.TOKENIZER_JSON, "not a regular file"],
    ),
}
REPORTS_AFTER_READING = ("size differs", "checksum differs", "missing", "ok:")


@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_refuses_a_bundle_that_leads_out(bundle_copy, outside, case):
    make, words = CASES[case]
    make(bundle_copy, outside)
    result = lcm_run("verify", bundle_copy)
    line = assert_one_line_error(result, *words)
    assert "re-export or re-download" in line, line
    assert not any(report in result.stdout for report in REPORTS_AFTER_READING), result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_refuses_a_bundle_that_leads_out(bundle_copy, outside, case, tmp_path):
    make, words = CASES[case]
    make(bundle_copy, outside)
    result = lcm_run("a cat", "--model", bundle_copy, "--seed", "1", "--steps", "1", "--output", tmp_path / "png")
    line = assert_one_line_error(result, *words)
    assert "re-export or re-download" in line, line
    assert not (tmp_path / "png").exists() or not any((tmp_path / "png").iterdir())


@pytest.mark.parametrize(
    "name",
    [
        "unet/openvino_model.bin",
        "unet/openvino_model.xml",
        bundle.TOKENIZER_JSON,
        bundle.SCHEDULER_CONFIG,
        "vae_decoder/config.json",
    ],
)
def test_fixed_name_files_of_a_folder_without_manifest_must_not_lead_out(bundle_copy, outside, name, tmp_path):
    """Folders from optimum-cli have no manifest: the fixed names loading opens are checked themselves."""
    (bundle_copy / bundle.MANIFEST_FILE).unlink()
    copy = outside / "copies" / name
    copy.parent.mkdir(parents=True)
    shutil.copy(bundle_copy / name, copy)
    _replace_with_symlink(bundle_copy / name, copy)
    result = lcm_run("a cat", "--model", bundle_copy, "--seed", "1", "--steps", "1", "--output", tmp_path / "png")
    assert_one_line_error(result, name, "outside the bundle", "re-export or re-download")
    assert not (tmp_path / "png").exists() or not any((tmp_path / "png").iterdir())


def test_symlinks_inside_the_bundle_still_work(bundle_copy, tmp_path):
    """Control: a bundle whose weights are symlinked within itself is no error (sizes and images as before)."""
    store = bundle_copy / "store"
    store.mkdir()
    for name in ("unet/openvino_model.bin", "vae_decoder/openvino_model.xml"):
        target = store / name.replace("/", "-")
        os.rename(bundle_copy / name, target)
        (bundle_copy / name).symlink_to(os.path.relpath(target, (bundle_copy / name).parent))
    verify = lcm_run("verify", bundle_copy)
    assert verify.returncode != 0 and "not in manifest: store/unet-openvino_model.bin" in verify.stdout, verify.stdout
    assert "outside" not in verify.stderr and "size differs" not in verify.stdout, verify.stderr
    result = lcm_run("a cat", "--model", bundle_copy, "--seed", "1", "--steps", "1", "--output", tmp_path / "cat.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cat.png").is_file()


@pytest.mark.parametrize(
    "case",
    [
        "traversal-entry",
        "absolute-entry",
        "symlinked-entry",
        "symlinked-weights",
        "symlinked-folder",
        "symlinked-manifest",
    ],
)
def test_nothing_outside_the_bundle_is_even_stat_ed(bundle_copy, outside, case, monkeypatch):
    """In process, every stat, lstat, readlink and open is recorded: none may reach the folder beside the bundle."""
    make, _words = CASES[case]
    make(bundle_copy, outside)
    calls: list[tuple[bool, str]] = []  # (follows symlinks, path)

    def recording(function, follows):
        def wrapper(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)):
                calls.append((follows and kwargs.get("follow_symlinks", True), os.path.abspath(path)))
            return function(path, *args, **kwargs)

        return wrapper

    for module, name, follows in (
        (os, "stat", True),
        (os, "lstat", False),
        (os, "readlink", False),
        (os, "open", True),
        (os, "scandir", True),
        (builtins, "open", True),
        (io, "open", True),
    ):
        monkeypatch.setattr(module, name, recording(getattr(module, name), follows))
    with pytest.raises(BundleError):
        bundle.verify_files(bundle_copy, bundle.read_manifest(bundle_copy))
    with pytest.raises(BundleError):
        loading.open_model_folder(bundle_copy)
    monkeypatch.undo()
    assert calls, "the recorder saw nothing: the test would pass vacuously"
    # What each call reached: a call that follows symlinks reaches the end of the chain.
    reached = [os.path.realpath(path) if follows else path for follows, path in calls]
    real_outside = os.path.realpath(outside)
    assert [path for path in reached if path == real_outside or path.startswith(real_outside + os.sep)] == []

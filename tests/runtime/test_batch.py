"""`lcm-run batch` through a real process: the three input formats, per-row options, seeds, kill -9
and resume, corrupted and missing files, changed options, --restart, bad rows, --strict, --verify.
The row parsing, names, seeds and manifest reading are also tested alone (no model)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, lcm_run
from pictures import box_mask, picture
from PIL import Image

from lcm_runtime.batch import read_manifest
from lcm_runtime.batch_plan import parse_csv, parse_jsonl, parse_text, row_seed, safe_name
from lcm_runtime.errors import InputError
from lcm_runtime.noise import SEED_LIMIT, image_seed

TINY = ("--steps", "2", "--width", "64", "--height", "64")


def batch(*args, **kwargs) -> subprocess.CompletedProcess[str]:
    return lcm_run("batch", *args, **kwargs)


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def pngs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


def parameters(path: Path) -> str:
    return Image.open(path).text["parameters"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- no model --------------------------------------------------------------------------------------


def test_rows_keep_their_line_numbers_and_bad_rows_keep_their_row_number():
    text = parse_text("# heading\n\n  a fox  \n#not a prompt\nan owl\n")
    assert [(row.row, row.line, row.values["prompt"]) for row in text.rows] == [(1, 3, "a fox"), (2, 5, "an owl")]

    jsonl = parse_jsonl('{"prompt": "a", "steps": 3}\n\n{broken\n"just text"\n{"prompt": "b", "steps": true}\n')
    assert [(row.row, row.line, row.values) for row in jsonl.rows] == [
        (1, 1, {"prompt": "a", "steps": 3}),
        (3, 4, {"prompt": "just text"}),
    ]
    assert [(bad.row, bad.line) for bad in jsonl.bad] == [(2, 3), (4, 5)]  # a bad row still has its number
    assert "not JSON" in jsonl.bad[0].reason and "steps must be a whole number" in jsonl.bad[1].reason

    table = parse_csv('prompt,seed,guidance\n"two\nlines",4,\n\na cat,x,1.5\nan owl,,2\n')
    assert [(row.row, row.line, row.values) for row in table.rows] == [
        (1, 2, {"prompt": "two\nlines", "seed": 4}),
        (3, 6, {"prompt": "an owl", "guidance": 2.0}),
    ]
    assert [(bad.row, bad.line) for bad in table.bad] == [(2, 5)] and "seed" in table.bad[0].reason
    with pytest.raises(InputError, match="unknown column 'stpes'"):
        parse_csv("prompt,stpes\na,1\n")
    # Said in the file's own terms: JSON's null and arrays, not Python's NoneType and list.
    odd = parse_jsonl('null\n[1, 2]\n{"prompt": "x\n')
    assert [bad.reason for bad in odd.bad[:2]] == [
        "a row must be a JSON object or a string, got null",
        "a row must be a JSON object or a string, got [1, 2]",
    ]
    assert odd.bad[2].reason == "not JSON (Unterminated string starting at: column 12)"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/path", "a\\b", ".hidden", "C:\\x", "a b:c*?"])
def test_names_become_file_names_inside_the_folder(name, tmp_path):
    stem = safe_name(name)
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".")
    assert (tmp_path / f"{stem}-1.png").resolve().parent == tmp_path.resolve()


@pytest.mark.parametrize("name", ["..", "///", " "])
def test_a_name_without_a_letter_is_refused(name):
    with pytest.raises(InputError, match="name"):
        safe_name(name)


def test_row_seeds_depend_on_the_seed_and_the_row_only():
    assert row_seed(0, 1) == 3361305961  # sha256("lcm-run batch 0 1")[:4]: a change here changes every job
    assert len({row_seed(0, row) for row in range(1, 1001)}) == 1000
    assert row_seed(1, 1) != row_seed(0, 1) and all(0 <= row_seed(5, row) < SEED_LIMIT for row in range(100))
    assert image_seed(10, 0) == 10 and image_seed(10, 2) == 12 and image_seed(2**64 - 1, 1) == 0


def test_a_torn_last_manifest_line_is_ignored(tmp_path):
    good = json.dumps({"file": "1-1.png", "sha256": "0" * 64})
    (tmp_path / "manifest.jsonl").write_text(good + "\nnot json\n" + good.replace("1-1", "2-1")[:30])
    content = read_manifest(tmp_path / "manifest.jsonl")
    assert list(content.records) == ["1-1.png"] and content.torn and content.unreadable == [2]


# --- through lcm-run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    picture(80, 72, 3).save(folder / "pic.png")
    picture(64, 64, 5).save(folder / "square.png")
    box_mask(64, 64, (8, 8, 40, 40)).save(folder / "mask.png")
    (folder / "text.png").write_text("not a picture")
    return folder


def test_jsonl_csv_and_text_rows_with_their_own_options(tiny_bundle_fp32, inputs, tmp_path):
    rows = inputs / "rows.jsonl"
    rows.write_text(
        '{"prompt": "a cat", "seed": 7, "num_images": 2, "name": "cat"}\n'
        "\n"
        '{"prompt": "wide", "width": 96, "height": 64, "steps": 1, "guidance": 2}\n'
        '{"prompt": "redo", "image": "pic.png", "strength": 0.5}\n'
        '{"prompt": "paint", "image": "square.png", "mask": "mask.png"}\n'
    )
    # Run from elsewhere: image paths are relative to PROMPTS' folder, not the working directory.
    result = batch(rows, "--model", tiny_bundle_fp32, "--output", tmp_path / "jsonl", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "jsonl"
    assert sorted(pngs(out)) == ["2-1.png", "3-1.png", "4-1.png", "cat-1.png", "cat-2.png"]
    assert [Image.open(out / name).size for name in ("2-1.png", "3-1.png", "4-1.png")] == [(96, 64), (80, 72), (64, 64)]
    assert "Seed: 7," in parameters(out / "cat-1.png") and "Seed: 8," in parameters(out / "cat-2.png")
    assert "Steps: 1," in parameters(out / "2-1.png") and "CFG scale: 2.0," in parameters(out / "2-1.png")
    assert "Steps: 2," in parameters(out / "cat-1.png")
    assert "Denoising strength: 0.5" in parameters(out / "3-1.png") and "Mask hash" in parameters(out / "4-1.png")
    lines = records(out)
    assert len(lines) == 5 and {record["file"] for record in lines} == set(pngs(out))
    by_file = {record["file"]: record for record in lines}
    assert [by_file[name]["line"] for name in ("cat-1.png", "2-1.png", "3-1.png", "4-1.png")] == [1, 3, 4, 5]
    assert [by_file[name]["task"] for name in ("2-1.png", "3-1.png", "4-1.png")] == [
        "text-to-image",
        "image-to-image",
        "inpainting",
    ]
    assert all(record["sha256"] == sha256(out / record["file"]) and record["seconds"] > 0 for record in lines)
    assert by_file["3-1.png"]["image"] == str(inputs / "pic.png") and by_file["3-1.png"]["strength"] == 0.5

    # The image-to-image row's image is the one `lcm-run --image` makes with that seed.
    single = lcm_run(
        "redo",
        "--model",
        tiny_bundle_fp32,
        "--image",
        inputs / "pic.png",
        "--strength",
        "0.5",
        "--steps",
        "2",
        "--seed",
        by_file["3-1.png"]["seed"],
        "--output",
        tmp_path / "single.png",
    )
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "single.png").read_bytes() == (out / "3-1.png").read_bytes()

    table = tmp_path / "rows.csv"
    table.write_text('name,prompt,seed,steps\nowl,"an owl, at night",3,1\n,"a two\nline prompt",,\nfox,a fox,5,\n')
    result = batch(table, "--model", tiny_bundle_fp32, "--output", tmp_path / "csv", *TINY)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "csv"
    assert sorted(pngs(out)) == ["2-1.png", "fox-1.png", "owl-1.png"]
    assert parameters(out / "owl-1.png").startswith("an owl, at night\nSteps: 1, ")
    assert "Seed: 3," in parameters(out / "owl-1.png") and "Steps: 2," in parameters(out / "fox-1.png")
    two_lines = parameters(out / "2-1.png")
    assert two_lines.startswith("a two\nline prompt\nSteps: 2, ") and f"Seed: {row_seed(0, 2)}," in two_lines
    assert sorted(record["line"] for record in records(out)) == [2, 3, 5]

    text = tmp_path / "prompts.txt"
    text.write_text("# my prompts\n\nfirst\n  second  \n")
    result = batch(text, "--model", tiny_bundle_fp32, "--output", tmp_path / "text", *TINY)
    assert result.returncode == 0, result.stderr
    by_file = {record["file"]: record for record in records(tmp_path / "text")}
    assert {name: (record["line"], record["prompt"]) for name, record in by_file.items()} == {
        "1-1.png": (3, "first"),
        "2-1.png": (4, "second"),
    }
    assert "images: 2 planned: 2 made, 0 already done, 0 failed" in result.stdout


def test_same_file_same_images_however_run_and_equal_to_single_runs(tiny_bundle_fp32, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue owl\na green frog\n")
    first = batch(prompts, "--model", tiny_bundle_fp32, "-o", tmp_path / "a", "-n", "2", *TINY)
    assert first.returncode == 0, first.stderr
    again = batch(prompts, "--model", tiny_bundle_fp32, "-o", tmp_path / "b", "-n", "2", "--workers", "2", *TINY)
    assert again.returncode == 0, again.stderr
    assert "2 processes" in again.stdout
    assert len(pngs(tmp_path / "a")) == 6 and pngs(tmp_path / "a") == pngs(tmp_path / "b")

    record = next(record for record in records(tmp_path / "a") if record["file"] == "2-2.png")
    assert record["seed"] == row_seed(0, 2) + 1  # image k of a row: its seed + k - 1
    single = lcm_run(
        "a blue owl", "--model", tiny_bundle_fp32, "--seed", record["seed"], *TINY, "--output", tmp_path / "s.png"
    )
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "a" / "2-2.png").read_bytes()

    other = batch(prompts, "--model", tiny_bundle_fp32, "-o", tmp_path / "c", "--seed", "1", *TINY)
    assert other.returncode == 0, other.stderr
    assert records(tmp_path / "c")[0]["seed"] == row_seed(1, 1)
    assert (tmp_path / "c" / "1-1.png").read_bytes() != (tmp_path / "a" / "1-1.png").read_bytes()


def test_kill_9_mid_job_then_resume_gives_the_uninterrupted_images(tiny_bundle_fp32, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {index}\n" for index in range(20)))
    size = ("--steps", "2", "--width", "256", "--height", "256")  # ~0.2 s an image: time to kill it mid-job
    reference = batch(prompts, "--model", tiny_bundle_fp32, "-o", tmp_path / "reference", *size)
    assert reference.returncode == 0, reference.stderr

    job = tmp_path / "job"
    env = {**os.environ, "LCM_CACHE_DIR": "off", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lcm_runtime.cli", "batch", str(prompts), "--model", str(tiny_bundle_fp32)]
    # Two worker processes: killing their parent must not leave them running (holding its stderr).
    process = subprocess.Popen(
        [*command, "-o", str(job), *size, "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            manifest = job / "manifest.jsonl"
            if manifest.exists() and manifest.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)  # EOF on stderr: every worker has ended too
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done_at_kill = (job / "manifest.jsonl").read_bytes().count(b"\n")
    assert 3 <= done_at_kill < 20  # killed mid-job

    resumed = batch(prompts, "--model", tiny_bundle_fp32, "-o", job, *size)
    assert resumed.returncode == 0, resumed.stderr
    skipped = int(resumed.stdout.split(" already done")[0].rsplit(" ", 1)[1])
    assert skipped == done_at_kill  # every complete line is kept; a torn one or a PNG without one is redone
    assert f"{20 - skipped} made, {skipped} already done, 0 failed" in resumed.stdout
    expected = [f"{row}-1.png" for row in range(1, 21)]
    assert sorted(path.name for path in job.iterdir()) == sorted([*expected, "job.json", "manifest.jsonl"])
    lines = records(job)
    assert sorted(record["file"] for record in lines) == sorted(expected)  # one line per image
    assert all(record["sha256"] == sha256(job / record["file"]) for record in lines)
    assert pngs(job) == pngs(tmp_path / "reference")
    assert batch("--verify", job).returncode == 0


def test_corrupted_missing_unrecorded_and_torn_images_are_redone(tiny_bundle_fp32, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\nthree\nfour\nfive\n")
    job = tmp_path / "job"
    first = batch(prompts, "--model", tiny_bundle_fp32, "-o", job, *TINY)
    assert first.returncode == 0, first.stderr
    assert batch("--verify", job).returncode == 0
    made = pngs(job)
    lines = {record["file"]: json.dumps(record) for record in records(job)}

    broken = bytearray(made["1-1.png"])
    broken[len(broken) // 2] ^= 0xFF
    (job / "1-1.png").write_bytes(bytes(broken))  # changed
    (job / "4-1.png").unlink()  # missing
    # A kill between a PNG's rename and its manifest line (2-1), and one in the middle of a line (3-1):
    torn = lines["3-1.png"][:40]
    (job / "manifest.jsonl").write_text(
        "\n".join(lines[name] for name in ("1-1.png", "4-1.png", "5-1.png")) + "\n" + torn
    )
    (job / ".2-1.k3j4.png.part").write_bytes(b"\x89PNG half")  # a write cut short

    verified = batch("--verify", job)
    assert verified.returncode == 1, verified.stdout
    assert "changed (sha256 differs from the manifest): 1-1.png" in verified.stdout
    assert "missing: 4-1.png" in verified.stdout
    assert "not in the manifest: 2-1.png" in verified.stdout and "not in the manifest: 3-1.png" in verified.stdout
    assert "torn" in verified.stdout and "5-1.png" not in verified.stdout
    assert_one_line_error(verified, "5 problems")  # the torn line counts; the .part file is no PNG

    resumed = batch(prompts, "--model", tiny_bundle_fp32, "-o", job, *TINY)
    assert resumed.returncode == 0, resumed.stderr
    assert "4 made, 1 already done, 0 failed" in resumed.stdout
    assert pngs(job) == made
    assert sorted((record["file"], record["sha256"]) for record in records(job)) == sorted(
        (name, sha256(job / name)) for name in made
    )  # one line per image
    assert sorted(path.name for path in job.iterdir()) == sorted([*made, "job.json", "manifest.jsonl"])
    assert batch("--verify", job).returncode == 0


def test_changed_options_are_refused_and_restart_starts_over(tiny_bundle_fp32, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    job = tmp_path / "job"
    assert batch(prompts, "--model", tiny_bundle_fp32, "-o", job, *TINY).returncode == 0
    (job / "notes.txt").write_text("the user's own file")
    made = pngs(job)

    steps = batch(prompts, "--model", tiny_bundle_fp32, "-o", job, "--steps", "3", "--width", "64", "--height", "64")
    assert steps.returncode == 2
    assert_one_line_error(steps, "--steps 2, not 3", "--restart")
    assert batch(prompts, "--model", tiny_bundle_fp32, "-o", job, *TINY, "--precision", "f32").returncode == 2

    other = tmp_path / "other-bundle"
    shutil.copytree(tiny_bundle_fp32, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["source"]["note"] = "another model"
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(batch(prompts, "--model", other, "-o", job, *TINY), "another model")

    prompts.write_text("a cat\na wolf\n")  # a finished row edited
    edited = batch(prompts, "--model", tiny_bundle_fp32, "-o", job, *TINY)
    assert edited.returncode == 2
    assert_one_line_error(edited, "2-1.png", "line 2", "'a wolf'")
    assert pngs(job) == made
    prompts.write_text("a cat\na dog\n")

    more = batch(prompts, "--model", tiny_bundle_fp32, "-o", job, *TINY, "-n", "2")  # more images: new files only
    assert more.returncode == 0, more.stderr
    assert "2 made, 2 already done" in more.stdout and sorted(pngs(job)) == ["1-1.png", "1-2.png", "2-1.png", "2-2.png"]

    restarted = batch(
        prompts, "--model", tiny_bundle_fp32, "-o", job, "--restart", "--steps", "3", "--width", "64", "--height", "64"
    )
    assert restarted.returncode == 0, restarted.stderr
    assert "removed the old job's 4 images" in restarted.stdout
    assert sorted(pngs(job)) == ["1-1.png", "2-1.png"] and "Steps: 3," in parameters(job / "1-1.png")
    assert (job / "notes.txt").read_text() == "the user's own file"
    assert len(records(job)) == 2


def test_a_folder_that_is_not_the_jobs_is_not_written_over(tiny_bundle_fp32, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "1-1.png").write_bytes(b"a user's picture")
    result = batch(prompts, "--model", tiny_bundle_fp32, "-o", tmp_path / "photos", *TINY)
    assert_one_line_error(result, "1-1.png", "not this job's")
    assert (tmp_path / "photos" / "1-1.png").read_bytes() == b"a user's picture"
    assert sorted(path.name for path in (tmp_path / "photos").iterdir()) == ["1-1.png"]


def test_bad_rows_are_reported_by_line_and_strict_stops_at_the_first(tiny_bundle_fp32, inputs, tmp_path):
    square, text = json.dumps(str(inputs / "square.png")), json.dumps(str(inputs / "text.png"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"prompt": "good one"}\n'
        '{"prompt": broken\n'
        '{"seed": 3}\n'
        '{"prompt": "bad width", "width": 65}\n'
        f'{{"prompt": "good two", "name": "two", "image": {square}}}\n'
        f'{{"prompt": "unreadable", "image": {text}}}\n'
        '{"prompt": "typo", "stpes": 3}\n'
        '{"prompt": "same name", "name": "two"}\n'
        f'{{"prompt": "too weak", "image": {square}, "strength": 0.01}}\n'
        '{"prompt": "steer", "negative_prompt": "blurry"}\n'
        '{"prompt": "too many steps", "steps": 51}\n'
    )
    result = batch(rows, "--model", tiny_bundle_fp32, "-o", tmp_path / "job", *TINY)
    assert result.returncode == 1, result.stderr
    assert sorted(pngs(tmp_path / "job")) == ["1-1.png", "two-1.png"]
    for line, words in [
        (2, "not JSON"),
        (3, "no prompt"),
        (4, "width must be a positive multiple of 8"),
        (6, "cannot read"),
        (7, "unknown field 'stpes'"),
        (8, "would be line 5's too"),
        (9, "strength"),  # planned, then refused by the scheduler: a failed image
        (10, "negative_prompt"),  # and by this LCM bundle: its guidance is embedded
        (11, "steps must be between 1 and 50 for this model"),  # its scheduler's original_inference_steps
    ]:
        assert any(text.startswith(f"  line {line}") and words in text for text in result.stdout.splitlines()), (
            line,
            result.stdout,
        )
    assert "bad rows: 7" in result.stdout and "failed: 2 images of 2 rows" in result.stdout
    assert "line 1:" not in result.stdout and "line 5:" not in result.stdout

    strict = batch(rows, "--model", tiny_bundle_fp32, "-o", tmp_path / "strict", "--strict", *TINY)
    assert strict.returncode == 1
    assert_one_line_error(strict, "line 2", "not JSON", "--strict")
    assert not (tmp_path / "strict").exists() or not pngs(tmp_path / "strict")

    too_weak = f'{{"prompt": "too weak", "image": {square}, "strength": 0.01}}'
    rows.write_text(f'{{"prompt": "good one"}}\n{too_weak}\n{{"prompt": "never made"}}\n')
    strict = batch(rows, "--model", tiny_bundle_fp32, "-o", tmp_path / "strict", "--strict", *TINY)
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1].startswith("error: PROMPTS line 2:"), strict.stderr
    assert sorted(pngs(tmp_path / "strict")) == ["1-1.png"]

    # --steps 51: past the scheduler's 50, refused before the job's folder is made (it used to fail every
    # image, and the job then kept the bad --steps).
    options = [("--steps", "0"), ("--steps", "51"), ("--precision", "f8"), ("--negative-prompt", "blurry")]
    for option, value in [*options, ("--vae", "tiny")]:
        bad_option = batch(rows, "--model", tiny_bundle_fp32, "-o", tmp_path / "other", *TINY, option, value)
        assert bad_option.returncode == (1 if option == "--vae" else 2), option  # 1: the bundle has no tiny VAE
        assert_one_line_error(bad_option, {"--precision": "precision", "--vae": "tiny VAE"}.get(option, option))
        assert not (tmp_path / "other").exists()
    assert_one_line_error(batch("--verify", tmp_path / "job", "-o", tmp_path), "--verify")

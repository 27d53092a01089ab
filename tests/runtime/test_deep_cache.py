"""deep_cache.py and --deep-cache: the step schedule, the refusals, and what lcm-run and lcm-run batch
record. The image itself is compared with the deepcache package's in tests/parity/test_deep_cache_parity.py."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, lcm_run
from PIL import Image

from lcm_runtime.bundle import UNET_SHALLOW
from lcm_runtime.deep_cache import DeepCacheUNet, check_interval
from lcm_runtime.errors import BundleError, InputError


class FakeUNet:
    """Records its calls; its output and deep feature say which call made them."""

    def __init__(self, name, calls):
        self.name, self.calls, self.fed = name, calls, []

    def __call__(self, sample, timestep):
        self.calls.append((self.name, timestep))
        return np.full(1, len(self.calls), dtype=np.float32)

    def deep_feature(self):
        return np.full(1, 100 + len(self.calls), dtype=np.float32)

    def set_deep_feature(self, feature):
        self.fed.append(float(feature[0]))


@pytest.mark.parametrize(
    "interval,steps,expected",
    [
        (2, 4, "FSFS"),
        (3, 7, "FSSFSSF"),
        (2, 1, "F"),
        (1, 3, "FFF"),
    ],
)
def test_a_full_step_every_interval_counted_from_the_first(interval, steps, expected):
    calls = []
    full, shallow = FakeUNet("F", calls), FakeUNet("S", calls)
    unet = DeepCacheUNet(full, shallow, interval)
    for step in range(steps):
        unet(np.zeros(1), 999 - step)
    assert "".join(name for name, _ in calls) == expected
    # Each skip step runs on the feature of the full step before it, the one just made.
    full_calls = [index + 1 for index, (name, _) in enumerate(calls) if name == "F"]
    assert shallow.fed == [100.0 + number for number in full_calls]


def test_a_unet_ir_without_the_deep_feature_is_a_one_line_bundle_error(tiny_bundle_fp32, tmp_path):
    import shutil

    from lcm_runtime import LCMPipeline

    broken = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_fp32, broken)
    shutil.copytree(broken / "unet", broken / UNET_SHALLOW)  # a shallow UNet, but no named deep feature
    pipe = LCMPipeline.from_pretrained(broken, cache_dir=False, deep_cache_interval=2)
    with pytest.raises(BundleError, match="no tensor named deep_feature.*re-export") as error:
        pipe("a cat", num_inference_steps=2, output_type="np", generator=1)
    assert "\n" not in str(error.value)


def folder_with(tmp_path, shallow):
    if shallow:
        (tmp_path / UNET_SHALLOW).mkdir()
        (tmp_path / UNET_SHALLOW / "openvino_model.xml").write_text("<net/>")
    return SimpleNamespace(root=tmp_path, xml=lambda component: tmp_path / component / "openvino_model.xml")


@pytest.mark.parametrize("value", [0, -1, 51, 2.0, True, "2", None])
def test_bad_intervals_are_refused_by_name(tmp_path, value):
    with pytest.raises(InputError, match="deep_cache_interval") as error:
        check_interval(folder_with(tmp_path, shallow=True), value)
    assert error.value.argument == "deep_cache_interval"


def test_an_interval_needs_a_bundle_with_the_shallow_unet(tmp_path):
    assert check_interval(folder_with(tmp_path, shallow=False), 1) == 1
    with pytest.raises(InputError, match="unet_shallow.*lcm-export --deep-cache"):
        check_interval(folder_with(tmp_path, shallow=False), 2)
    assert check_interval(folder_with(tmp_path, shallow=True), 3) == 3


def parameters(path: Path) -> str:
    return Image.open(path).text["parameters"]


def test_lcm_run_deep_cache_writes_and_records_it(tiny_deep_cache_bundle, tmp_path):
    run = ["a cat", "--model", tiny_deep_cache_bundle, "--seed", "5", "--steps", "4"]
    cached = lcm_run(*run, "--deep-cache", "2", "--output", tmp_path / "cached.png")
    assert cached.returncode == 0, cached.stderr
    assert "DeepCache interval: 2" in parameters(tmp_path / "cached.png")
    info = lcm_run("info", tiny_deep_cache_bundle)
    assert "deep cache: unet_shallow" in info.stdout and "unet_shallow fp32" in info.stdout, info.stderr
    every = lcm_run(*run, "--deep-cache", "1", "--output", tmp_path / "every.png")
    plain = lcm_run(*run, "--output", tmp_path / "plain.png")
    assert every.returncode == 0 and plain.returncode == 0
    assert "DeepCache" not in parameters(tmp_path / "plain.png")
    images = {name: np.asarray(Image.open(tmp_path / f"{name}.png")) for name in ("cached", "every", "plain")}
    assert np.array_equal(images["every"], images["plain"])
    assert not np.array_equal(images["cached"], images["plain"])


def test_lcm_run_deep_cache_on_a_bundle_without_it_is_one_line(tiny_bundle_fp32, tmp_path):
    result = lcm_run("a cat", "--model", tiny_bundle_fp32, "--deep-cache", "2", "--output", tmp_path / "out")
    assert_one_line_error(result, "unet_shallow", "lcm-export --deep-cache", "(lcm-run --deep-cache)")
    assert_one_line_error(
        lcm_run("a cat", "--model", tiny_bundle_fp32, "--deep-cache", "0", "--output", tmp_path / "out"),
        "between 1 and 50",
        "--deep-cache",
    )
    assert list(tmp_path.rglob("*.png")) == []


def test_a_batch_job_keeps_its_deep_cache_interval(tiny_deep_cache_bundle, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    job = tmp_path / "job"
    tiny = ("--steps", "2", "--width", "64", "--height", "64")
    made = lcm_run("batch", prompts, "--model", tiny_deep_cache_bundle, "-o", job, *tiny, "--deep-cache", "2")
    assert made.returncode == 0, made.stderr
    assert json.loads((job / "job.json").read_text())["options"]["deep_cache_interval"] == 2
    assert "DeepCache interval: 2" in parameters(job / "1-1.png")
    changed = lcm_run("batch", prompts, "--model", tiny_deep_cache_bundle, "-o", job, *tiny)
    assert_one_line_error(changed, "--deep-cache 2, not 1", "--restart")
    # A job.json from before --deep-cache existed ran every step in full: it resumes without the option.
    # (Its images were made with DeepCache here, but the job only compares options.)
    description = json.loads((job / "job.json").read_text())
    del description["options"]["deep_cache_interval"]
    (job / "job.json").write_text(json.dumps(description))
    resumed = lcm_run("batch", prompts, "--model", tiny_deep_cache_bundle, "-o", job, *tiny, "--deep-cache", "2")
    assert_one_line_error(resumed, "--deep-cache 1, not 2")
    plain = lcm_run("batch", prompts, "--model", tiny_deep_cache_bundle, "-o", job, *tiny)
    assert plain.returncode == 0 and "1 already done" in plain.stdout, plain.stderr


def test_releasing_the_unet_frees_the_shallow_unet_too(tiny_deep_cache_bundle, monkeypatch):
    """Also: the memory check is asked about every model a call will compile, the shallow UNet too,
    and once a model is held it is no longer counted."""
    from lcm_runtime import LCMPipeline, core

    asked = []
    check_fits = core.check_fits
    monkeypatch.setattr(
        core, "check_fits", lambda *args, **kwargs: (asked.append(set(args[6])), check_fits(*args, **kwargs))
    )
    kept = LCMPipeline.from_pretrained(tiny_deep_cache_bundle, cache_dir=False, deep_cache_interval=2)
    kept("a cat", num_inference_steps=2, output_type="np", generator=1)
    assert {"unet", UNET_SHALLOW} <= set(kept.models.in_memory())
    kept("a cat", num_inference_steps=2, output_type="np", generator=1)
    assert {"unet", UNET_SHALLOW} <= asked[0] and not {"unet", UNET_SHALLOW} & asked[1]
    freed = LCMPipeline.from_pretrained(
        tiny_deep_cache_bundle, cache_dir=False, deep_cache_interval=2, release_after_use=["unet"]
    )
    freed("a cat", num_inference_steps=2, output_type="np", generator=1)
    assert not {"unet", UNET_SHALLOW} & set(freed.models.in_memory())

"""The tiny bundles against diffusers' images pinned in data/tiny_golden.json, without torch.

The parity tests compare with diffusers live, which needs torch; these compare with slices diffusers made
once (data/make_tiny_golden.py, run as data/README.md says), so a runtime-only environment checks every
task and both guidance modes against diffusers too: the torch-free install test runs this file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pictures import case_pictures

from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline
from lcm_runtime.bundle import read_manifest

GOLDEN = json.loads((Path(__file__).parent / "data" / "tiny_golden.json").read_text(encoding="utf-8"))
CLASSES = {"text": LCMPipeline, "img2img": LCMImg2ImgPipeline, "inpaint": LCMInpaintPipeline}
ENVIRONMENT = {"lcm": "LCM_TEST_BUNDLE", "cfg": "LCM_TEST_CFG_BUNDLE"}
# The parity tests' float bound (FP32 IR at f32 against torch); CPUs of this kind agree far closer.
TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def bundles(tiny_bundle_fp32: Path, tiny_cfg_bundle: Path) -> dict[str, Path]:
    found = {"lcm": tiny_bundle_fp32, "cfg": tiny_cfg_bundle}
    for name, bundle in found.items():
        files = read_manifest(bundle).files
        checksums = {
            component: files[f"{component}/openvino_model.bin"]["sha256"] for component in GOLDEN["bundles"][name]
        }
        if checksums != GOLDEN["bundles"][name]:
            message = f"the {name} bundle {bundle} has other weights than the golden values were made for"
            if os.environ.get(ENVIRONMENT[name]):
                pytest.skip(f"{message} (${ENVIRONMENT[name]} names another bundle)")
            # Built here from the seed-0 tiny pipeline: the builder or torch changed the weights.
            pytest.fail(f"{message}; if that change is meant, run: {GOLDEN['regenerate']}")
    return found


@pytest.fixture(scope="module")
def pipelines(bundles: dict[str, Path]) -> dict[tuple[str, str], LCMPipeline]:
    made = {}
    for name, bundle in bundles.items():
        text = LCMPipeline.from_pretrained(bundle, precision="f32", cache_dir=False)
        made[name, "text"] = text
        made[name, "img2img"] = LCMImg2ImgPipeline.from_pipe(text)
        made[name, "inpaint"] = LCMInpaintPipeline.from_pipe(text)
    return made


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[case["id"] for case in GOLDEN["cases"]])
def test_the_runtime_gives_diffusers_pinned_slices(pipelines, case):
    pipe = pipelines[case["bundle"], case["task"]]
    images = pipe(**case["call"], **case_pictures(case), output_type="np", generator=case["seed"]).images
    assert len(images) == len(case["slices"])
    ours = np.array([image[-3:, -3:, -1].ravel() for image in images])
    np.testing.assert_allclose(ours, np.array(case["slices"]), atol=TOLERANCE, rtol=0)


def test_the_golden_values_cover_every_task_in_both_guidance_modes():
    covered = {(case["bundle"], case["task"]) for case in GOLDEN["cases"]}
    assert covered == {(bundle, task) for bundle in ENVIRONMENT for task in CLASSES}
    # Slices that vary: a pinned flat patch would pass for almost any image.
    for case in GOLDEN["cases"]:
        assert np.ptp(np.array(case["slices"])) > 0.02, case["id"]


def test_another_seed_misses_the_slice(pipelines):
    """The tolerance is tight enough to tell images apart: the first case with its seed changed fails it."""
    case = GOLDEN["cases"][0]
    pipe = pipelines[case["bundle"], case["task"]]
    images = pipe(**case["call"], output_type="np", generator=case["seed"] + 1).images
    ours = np.array([image[-3:, -3:, -1].ravel() for image in images])
    assert np.abs(ours - np.array(case["slices"])).max() > 10 * TOLERANCE

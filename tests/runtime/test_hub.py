"""--model as a hub id: downloaded once into real files; offline, the earlier download or a clear error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, lcm_run

from lcm_runtime.hub import looks_like_hub_id, resolve_model


@pytest.mark.parametrize(
    "model, expected",
    [
        ("OpenVINO/LCM_Dreamshaper_v7-fp16-ov", True),
        ("someone/bundle.v2", True),
        ("/abs/path", False),
        ("./relative/path", False),
        ("a/b/c", False),
        ("plain-folder", False),
        ("~/bundle", False),
    ],
)
def test_what_counts_as_a_hub_id(model, expected):
    assert looks_like_hub_id(model) is expected


def test_an_existing_folder_is_never_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not looks_like_hub_id("owner/name")
    assert str(resolve_model("owner/name")) == "owner/name"


def test_offline_a_missing_hub_model_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LCM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = lcm_run(
        "a cat", "--model", "nobody/no-such-bundle", env_extra={"LCM_MODELS_DIR": str(tmp_path / "models")}
    )
    assert_one_line_error(result, "nobody/no-such-bundle", "HF_HUB_OFFLINE", "bundle folder")


def test_offline_an_earlier_download_is_used(tiny_bundle_fp32, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle_fp32, models / "someone--tiny-lcm")  # what the first, online run wrote
    monkeypatch.setenv("LCM_MODELS_DIR", str(models))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lcm_runtime import LCMPipeline

    by_id = LCMPipeline.from_pretrained("someone/tiny-lcm", precision="f32")
    by_path = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32")
    call = dict(num_inference_steps=1, height=64, width=64, generator=0, output_type="np")
    np.testing.assert_array_equal(by_id("a cube", **call).images, by_path("a cube", **call).images)

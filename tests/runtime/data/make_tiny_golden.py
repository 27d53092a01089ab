"""Write tiny_golden.json: diffusers' images for the tiny test bundles, as 3x3 slices (see README.md here).

    HF_HUB_OFFLINE=1 .venv/bin/python tests/runtime/data/make_tiny_golden.py

Builds the two tiny bundles exactly as tests/conftest.py does (the seed-0 LCM pipeline saved and exported
at fp32; the seed-0 SD1.5-like pipeline exported at fp32 in cfg mode), runs each case through diffusers
with NumPy's draws for the case's seed (the runtime's draws for ``generator=seed``), checks that the
runtime gives the same image (the parity bar), and writes the slices with the bundles' weight checksums.
test_tiny_golden.py then checks the runtime against these values without torch.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/: pictures.py, references.py

import diffusers  # noqa: E402
from pictures import case_pictures  # noqa: E402
from references import (  # noqa: E402
    assert_same_image,
    components,
    diffusers_negatives,
    lcm_inpaint_reference,
    lcm_reference,
    numpy_draws,
    reference,
)

from lcm_export.exporter import ExportOptions, export_bundle  # noqa: E402
from lcm_export.source import load_source  # noqa: E402
from lcm_export.tiny import build_tiny_sd_pipeline, load_tiny_sd_random, save_tiny_pipeline  # noqa: E402
from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline  # noqa: E402
from lcm_runtime.bundle import read_manifest  # noqa: E402
from lcm_runtime.image import to_uint8  # noqa: E402

OUT = HERE / "tiny_golden.json"
WEIGHTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")

# Each case: the bundle ("lcm": embedded guidance, "cfg": LCM-LoRA-like), the task, the seed, the call's
# keyword arguments as the runtime takes them, and for image tasks the picture (width, height, seed) and
# the mask's box (left, top, right, bottom).
CASES: list[dict[str, Any]] = [
    {
        "id": "lcm-text",
        "bundle": "lcm",
        "task": "text",
        "seed": 1234,
        "call": {"prompt": "a photo of a cat", "num_inference_steps": 4, "guidance_scale": 8.0},
    },
    {
        "id": "lcm-text-batch",
        "bundle": "lcm",
        "task": "text",
        "seed": 7,
        "call": {
            "prompt": ["a red car", "ein grünes Haus am See"],
            "num_images_per_prompt": 2,
            "num_inference_steps": 2,
            "guidance_scale": 2.0,
            "height": 96,
            "width": 64,
        },
    },
    {
        "id": "lcm-img2img",
        "bundle": "lcm",
        "task": "img2img",
        "seed": 21,
        "picture": [64, 64, 1],
        "call": {"prompt": "a watercolor fox", "num_inference_steps": 4, "strength": 0.6, "guidance_scale": 8.0},
    },
    {
        "id": "lcm-inpaint",
        "bundle": "lcm",
        "task": "inpaint",
        "seed": 5,
        "picture": [64, 64, 11],
        "mask_box": [24, 20, 64, 64],  # the pinned corner is repainted
        "call": {"prompt": "a red door", "num_inference_steps": 4, "strength": 1.0, "guidance_scale": 8.0},
    },
    {
        "id": "cfg-text",
        "bundle": "cfg",
        "task": "text",
        "seed": 7,
        "call": {
            "prompt": "a red car",
            "negative_prompt": "blurry, low quality",
            "num_inference_steps": 4,
            "guidance_scale": 1.8,
            "guidance_rescale": 0.7,
        },
    },
    {
        "id": "cfg-img2img",
        "bundle": "cfg",
        "task": "img2img",
        "seed": 21,
        "picture": [64, 64, 1],
        "call": {
            "prompt": "a watercolor fox",
            "negative_prompt": "blurry",
            "num_inference_steps": 4,
            "strength": 0.6,
            "guidance_scale": 1.8,
        },
    },
    {
        "id": "cfg-inpaint",
        "bundle": "cfg",
        "task": "inpaint",
        "seed": 5,
        "picture": [64, 64, 11],
        "mask_box": [24, 20, 64, 64],  # the pinned corner is repainted
        "call": {
            "prompt": "a red door",
            "negative_prompt": "fog",
            "num_inference_steps": 4,
            "strength": 1.0,
            "guidance_scale": 2.0,
        },
    },
]


def golden_slices(images: Any) -> list[list[float]]:
    """Each image's bottom-right 3x3 pixels of its last channel, as diffusers' own tests pin images."""
    return [[round(float(value), 6) for value in image[-3:, -3:, -1].ravel()] for image in images]


def weight_checksums(bundle: Path) -> dict[str, str]:
    files = read_manifest(bundle).files
    return {name: files[f"{name}/openvino_model.bin"]["sha256"] for name in WEIGHTS}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tiny-golden-"))
    lcm_folder = save_tiny_pipeline(work / "pipeline", seed=0)
    bundles = {"lcm": work / "lcm-bundle", "cfg": work / "cfg-bundle"}
    export_bundle(load_source(str(lcm_folder)), bundles["lcm"], ExportOptions(weights="fp32"))
    export_bundle(load_tiny_sd_random(0), bundles["cfg"], ExportOptions(weights="fp32", guidance_mode="cfg"))

    sd_parts = components(build_tiny_sd_pipeline(0))
    references = {
        ("lcm", "text"): lcm_reference(diffusers.LatentConsistencyModelPipeline, lcm_folder),
        ("lcm", "img2img"): lcm_reference(diffusers.LatentConsistencyModelImg2ImgPipeline, lcm_folder),
        ("lcm", "inpaint"): lcm_inpaint_reference(lcm_folder),
        ("cfg", "text"): reference(diffusers.StableDiffusionPipeline, sd_parts, lcm_scheduler=True),
        ("cfg", "img2img"): reference(diffusers.StableDiffusionImg2ImgPipeline, sd_parts, lcm_scheduler=True),
        ("cfg", "inpaint"): reference(diffusers.StableDiffusionInpaintPipeline, sd_parts, lcm_scheduler=True),
    }
    classes = {"text": LCMPipeline, "img2img": LCMImg2ImgPipeline, "inpaint": LCMInpaintPipeline}

    written = []
    for case in CASES:
        call = dict(case["call"], **case_pictures(case), output_type="np")
        theirs = dict(call)
        if isinstance(theirs["prompt"], list) and "negative_prompt" in theirs:
            theirs["negative_prompt"] = diffusers_negatives(theirs["negative_prompt"], theirs["prompt"])
        with numpy_draws(case["seed"]):
            expected = references[case["bundle"], case["task"]](**theirs).images
        ours = classes[case["task"]].from_pretrained(bundles[case["bundle"]], precision="f32", cache_dir=False)
        result = ours(**call, generator=case["seed"]).images
        assert_same_image(to_uint8(result), to_uint8(expected))
        assert to_uint8(expected).std() > 5, f"{case['id']}: a flat image pins nothing"
        written.append(dict(case, slices=golden_slices(expected)))
        print(f"{case['id']}: {len(expected)} image(s), same as the runtime's")

    golden = {
        "regenerate": "HF_HUB_OFFLINE=1 .venv/bin/python tests/runtime/data/make_tiny_golden.py",
        "diffusers": diffusers.__version__,
        "bundles": {name: weight_checksums(path) for name, path in bundles.items()},
        "cases": written,
    }
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

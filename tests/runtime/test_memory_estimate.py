"""The memory estimate a request is checked against holds: within its stated error of the measured peak."""

import json
import subprocess
import sys

import pytest

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child of this (large)
# pytest process would report the parent's resident size.
MEASURE = """
import json, sys
from lcm_runtime import LCMPipeline
def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))
pipe = LCMPipeline.from_pretrained(sys.argv[1], precision="f32", cache_dir=False, max_images_per_call=16)
before = status("VmRSS")
pipe("a cat", num_inference_steps=1, height=int(sys.argv[2]), width=int(sys.argv[2]),
     num_images_per_prompt=int(sys.argv[3]), generator=1, tiled_vae=False)
print(json.dumps(status("VmHWM") - before))
"""


@pytest.mark.parametrize("side,batch", [(512, 1), (1024, 4)])
def test_estimate_within_its_stated_error_of_the_measured_peak(tiny_bundle_fp32, side, batch):
    from lcm_runtime.loading import open_model_folder
    from lcm_runtime.memory import ESTIMATE_ERROR, estimate_peak

    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tiny_bundle_fp32), str(side), str(batch)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    estimate = estimate_peak(
        open_model_folder(tiny_bundle_fp32), "full", batch, side, side, "f32", ["text_encoder", "unet", "vae_decoder"]
    )
    assert abs(estimate / measured - 1) <= ESTIMATE_ERROR, (estimate, measured)


def test_refused_requests_are_refused_within_a_second_before_compiling(tiny_bundle_fp32, monkeypatch):
    import time

    from lcm_runtime import LCMPipeline, memory
    from lcm_runtime.errors import InputError

    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, cache_dir=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 300 << 20)
    started = time.perf_counter()
    with pytest.raises(InputError, match="needs about"):
        pipe("a cat", height=2048, width=2048, num_images_per_prompt=4)
    assert time.perf_counter() - started < 1.0 and pipe.models.in_memory() == []
    pipe("a cat", height=64, width=64, num_inference_steps=1)  # a small one still runs


def test_models_already_compiled_are_not_counted_again(tiny_bundle_fp32):
    from lcm_runtime.loading import open_model_folder
    from lcm_runtime.memory import estimate_peak

    folder = open_model_folder(tiny_bundle_fp32)
    everything = estimate_peak(folder, "full", 1, 64, 64, "f32", ["text_encoder", "unet", "vae_decoder"])
    without_unet = estimate_peak(folder, "full", 1, 64, 64, "f32", ["text_encoder", "vae_decoder"])
    unet_file = (tiny_bundle_fp32 / "unet" / "openvino_model.bin").stat().st_size
    assert everything - without_unet == unet_file  # fp32 weights run at f32: their file's size

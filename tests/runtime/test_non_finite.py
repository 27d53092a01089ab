"""A model that emits NaN gives an error naming the stage and what to try, never a black PNG."""

import shutil

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, lcm_run


def poisoned_bundle(source, target, component):
    """A copy of ``source`` whose ``component`` output is multiplied by NaN (the manifest rewritten to match)."""
    from lcm_runtime import bundle
    from lcm_runtime.openvino_runtime import ov

    shutil.copytree(source, target)
    core = ov.Core()
    model = core.read_model(target / bundle.component_xml(component))
    output = model.outputs[0]
    names = output.get_names()
    result = output.get_node()  # the Result node
    producer = result.input_value(0)
    import openvino.opset13 as ops

    poisoned = ops.multiply(producer, ops.constant(np.array(np.nan, dtype=np.float32)))
    result.input(0).replace_source_output(poisoned.output(0))
    poisoned.output(0).get_tensor().set_names(names)
    for suffix in (bundle.MODEL_XML, bundle.MODEL_BIN):
        (target / component / suffix).unlink()
    ov.save_model(model, target / bundle.component_xml(component), compress_to_fp16=False)
    manifest = bundle.read_manifest(target)
    bundle.write_manifest(target, manifest)
    return target


@pytest.mark.parametrize("component,stage", [("unet", "UNet"), ("vae_decoder", "VAE decoder")])
def test_nan_from_a_model_is_an_error_and_no_file(tiny_bundle_fp32, tmp_path, component, stage):
    target = poisoned_bundle(tiny_bundle_fp32, tmp_path / "bundle", component)
    result = lcm_run("a cat", "--model", target, "--steps", "2", "--output", tmp_path / "out")
    assert_one_line_error(result, stage, "NaN", 'precision="f32"')
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("option", ["--guidance", "--strength"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_options_are_refused(tiny_bundle_fp32, tmp_path, option, value):
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 30, 200)).save(tmp_path / "in.png")
    extra = ["--image", tmp_path / "in.png"] if option == "--strength" else []
    result = lcm_run("a cat", "--model", tiny_bundle_fp32, option, value, *extra, "--output", tmp_path / "out")
    assert_one_line_error(result, option)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

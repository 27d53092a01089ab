"""--weights bf16: matmul and convolution weights stored as the CPU plugin would convert them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402

from lcm_export.compress import BF16_WEIGHT_CONSUMERS, bfloat16_bits  # noqa: E402
from lcm_runtime.bundle import component_xml  # noqa: E402

PROMPT = "a photo of a cat"


def _uses(node: ov.Node) -> list[ov.Node]:
    return [target.get_node() for target in node.output(0).get_target_inputs()]


def test_bfloat16_rounding_matches_torch():
    special = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5e-3, 65504.0, 1e-40, np.inf, -np.inf], np.float32)
    values = np.concatenate([special, np.random.default_rng(0).standard_normal(10_000).astype(np.float32)])
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(bfloat16_bits(values), expected)
    nan = bfloat16_bits(np.array([np.nan], np.float32))
    assert (nan & 0x7F80) == 0x7F80 and (nan & 0x7F) != 0  # still a NaN


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder"])
def test_only_matmul_and_convolution_weights_become_bf16(export_tiny, component):
    core = ov.Core()
    bf16_model = core.read_model(export_tiny("bf16") / component_xml(component))
    fp16_model = core.read_model(export_tiny("fp16") / component_xml(component))
    by_type: dict[str, list[ov.Node]] = {"bf16": [], "f16": []}
    for node in bf16_model.get_ops():
        if node.get_type_name() == "Constant" and node.get_output_element_type(0).get_type_name() in by_type:
            by_type[node.get_output_element_type(0).get_type_name()].append(node)
    assert by_type["bf16"], "no weight was stored as bf16"
    for constant in by_type["bf16"]:
        users = {user.get_type_name() for convert in _uses(constant) for user in _uses(convert)}
        assert users <= BF16_WEIGHT_CONSUMERS, constant.get_friendly_name()
    # What stays FP16 (biases, norms, embeddings) is not a matmul/convolution weight.
    for constant in by_type["f16"]:
        users = {user.get_type_name() for convert in _uses(constant) for user in _uses(convert)}
        assert not (users and users <= BF16_WEIGHT_CONSUMERS and len(constant.get_output_shape(0)) >= 2)
    # The same weights as the FP16 bundle's, rounded: same count of values, same total size.
    fp16_values = sum(
        int(np.prod(n.get_output_shape(0)))
        for n in fp16_model.get_ops()
        if n.get_type_name() == "Constant" and n.get_output_element_type(0) == ov.Type.f16
    )
    assert fp16_values == sum(int(np.prod(n.get_output_shape(0))) for group in by_type.values() for n in group)


def _image(bundle, precision: str) -> np.ndarray:
    from lcm_runtime import LCMPipeline

    pipeline = LCMPipeline.from_pretrained(bundle, precision=precision, cache_dir=False)
    return pipeline(PROMPT, num_inference_steps=2, generator=0, output_type="np").images


def test_bf16_bundle_makes_the_fp16_bundles_image_on_a_bf16_cpu(export_tiny):
    """Where the CPU computes in bf16 by default, storing the weights the way the plugin converts
    them changes nothing: the image is bit-identical. At f32 the stored rounding shows."""
    if ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") != ov.Type.bf16:
        pytest.skip("this CPU does not compute in bf16 by default")
    fp16_bundle, bf16_bundle = export_tiny("fp16"), export_tiny("bf16")
    assert np.array_equal(_image(fp16_bundle, "auto"), _image(bf16_bundle, "auto"))
    exact, rounded = _image(fp16_bundle, "f32"), _image(bf16_bundle, "f32")
    assert not np.array_equal(exact, rounded)  # the weights really are stored differently
    assert np.abs(exact - rounded).max() < 0.05

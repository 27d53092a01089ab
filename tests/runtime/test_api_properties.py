"""Property-based: any arguments to the public API either give finite images or the project's own error.

Never another exception, a NaN image or a hang; bounded in examples (sizes stay small so each case
compiles and runs in well under a second on the tiny bundle).
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lcm_runtime.errors import LCMError  # noqa: E402

GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
)
SIDES = st.one_of(st.none(), st.integers(-16, 136), st.sampled_from([8, 64, 72, 128]), GARBAGE)
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def pipelines(tiny_bundle_fp32):
    from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline

    text = LCMPipeline.from_pretrained(tiny_bundle_fp32, cache_dir=False, max_images_per_call=4)
    return text, LCMImg2ImgPipeline.from_pipe(text), LCMInpaintPipeline.from_pipe(text)


OUTCOMES: list[str] = []


def outcome(call):
    try:
        result = call()
    except LCMError as error:
        assert str(error) and "\n" not in str(error)
        OUTCOMES.append(type(error).__name__)
        return None
    OUTCOMES.append("image")
    images = result.images
    if isinstance(images, np.ndarray):
        assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    else:
        assert images and all(image.mode == "RGB" for image in images)
    return result


@SETTINGS
@given(
    prompt=st.one_of(st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3), GARBAGE),
    steps=st.one_of(st.none(), st.integers(-2, 60), GARBAGE),
    guidance=st.one_of(st.none(), st.floats(-5, 200), GARBAGE),
    height=SIDES,
    width=SIDES,
    count=st.one_of(st.integers(1, 4), st.integers(-1, 6), GARBAGE),
    generator=st.one_of(st.none(), st.integers(-3, 2**66), GARBAGE),
    output_type=st.one_of(st.sampled_from(["pil", "np"]), GARBAGE),
)
def test_text_to_image_arguments(pipelines, prompt, steps, guidance, height, width, count, generator, output_type):
    text, _, _ = pipelines
    outcome(
        lambda: text(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            num_images_per_prompt=count,
            generator=generator,
            output_type=output_type,
        )
    )


PICTURES = st.one_of(
    st.builds(lambda h, w: np.full((h, w, 3), 200, np.uint8), st.integers(8, 80), st.integers(8, 80)),
    st.builds(
        lambda h, w, c: np.full((h, w, c), 128, np.uint8),
        st.integers(0, 80),
        st.integers(0, 80),
        st.sampled_from([1, 2, 3, 4]),
    ),
    st.builds(
        lambda h, w, v: np.full((h, w, 3), v, np.float32),
        st.integers(1, 80),
        st.integers(1, 80),
        # float32's own values (inf and NaN included): a wider float would overflow in np.full, a warning.
        st.floats(allow_nan=True, allow_infinity=True, width=32),
    ),
    st.builds(lambda h, w: np.zeros((1, h, w, 3), np.float64), st.integers(1, 80), st.integers(1, 80)),
    GARBAGE,
)


@SETTINGS
@given(
    image=PICTURES,
    mask=PICTURES,
    strength=st.one_of(st.floats(0.5, 1), st.floats(-1, 2), GARBAGE),
    steps=st.one_of(st.integers(1, 4), st.integers(-1, 8), GARBAGE),
    inpaint=st.booleans(),
)
def test_picture_arguments(pipelines, image, mask, strength, steps, inpaint):
    _, img2img, inpainting = pipelines
    if inpaint:
        outcome(
            lambda: inpainting(
                "a door",
                image=image,
                mask_image=mask,
                strength=strength,
                num_inference_steps=steps,
                height=64,
                width=64,
                output_type="np",
                generator=1,
            )
        )
    else:
        outcome(
            lambda: img2img(
                "a fox", image=image, strength=strength, num_inference_steps=steps, output_type="np", generator=1
            )
        )


def test_the_properties_saw_both_images_and_errors(pipelines):
    """Runs after the two above (file order): a strategy that only ever errs would prove nothing."""
    if not OUTCOMES:
        pytest.skip("run with the property tests above")
    assert "image" in OUTCOMES and "InputError" in OUTCOMES, OUTCOMES

"""The safety checker: exported from diffusers' StableDiffusionSafetyChecker, run torch-free, same flags."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from cli_helpers import lcm_export
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker  # noqa: E402
from PIL import Image  # noqa: E402

from lcm_export.exporter import ExportOptions, export_bundle  # noqa: E402
from lcm_export.safety_checker import (  # noqa: E402
    SHIPPED_PREPROCESSOR,
    build_tiny_random_safety_checker,
    load_safety_checker,
    save_safety_checker_folder,
    shipped_preprocessor_config,
)
from lcm_export.source import SourceError, load_source  # noqa: E402
from lcm_runtime import bundle  # noqa: E402
from lcm_runtime.bundle import read_manifest, verify_files  # noqa: E402
from lcm_runtime.errors import BundleError  # noqa: E402
from lcm_runtime.openvino_runtime import ov  # noqa: E402
from lcm_runtime.safety_checker import (  # noqa: E402
    SafetyCheckerModel,
    SafetyConcepts,
    black_out,
    clip_input_shape,
    clip_preprocess,
    load_preprocessor_config,
    nsfw_flags,
)

# transformers 5 picks the torchvision backend for CLIPImageProcessor when torchvision is installed
# (other pixels); the reference is always the PIL one (in transformers 4, CLIPImageProcessor was it).
ClipPil = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
MARGIN = 0.005  # designed scores sit this far from each decision, far beyond OpenVINO-vs-torch noise


def sample_images() -> list[np.ndarray]:
    """Varied uint8 RGB images: noise, flat colours, gradients, a checkerboard; square and not."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96).astype(np.uint8)
    rows = np.tile(np.linspace(0, 255, 100).astype(np.uint8)[:, None], (1, 60))
    y, x = np.mgrid[0:64, 0:64]
    return [
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        np.full((64, 64, 3), 200, np.uint8),
        np.zeros((96, 64, 3), np.uint8),
        np.stack([np.tile(ramp, (64, 1))] * 3, -1),  # 64x96
        np.stack([rows, 255 - rows, np.full_like(rows, 30)], -1),  # 100x60: long side 373.33 -> 373
        rng.integers(0, 256, (50, 77, 3), dtype=np.uint8),  # 344.96 -> 344: int() truncates
        (((x // 8 + y // 8) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1),
        np.stack([np.full((64, 64), 255), np.zeros((64, 64)), np.full((64, 64), 128)], -1).astype(np.uint8),
    ]


def pil_pixel_values(images, config=None):
    return ClipPil(**(config or {}))([Image.fromarray(image) for image in images], return_tensors="np").pixel_values


def torch_cosines(checker, pixel_values):
    with torch.no_grad():
        embeds = checker.visual_projection(checker.vision_model(torch.from_numpy(pixel_values))[1])
        normalized = torch.nn.functional.normalize(embeds)
        return (
            (normalized @ torch.nn.functional.normalize(checker.special_care_embeds).T).numpy(),
            (normalized @ torch.nn.functional.normalize(checker.concept_embeds).T).numpy(),
        )


def design_thresholds(checker, pixel_values):
    """Thresholds for the tiny random checker: one image is flagged only thanks to the special-care
    adjustment (its concept score is -MARGIN, +MARGIN with the 0.01), another directly by a score of
    +MARGIN, every other score at least MARGIN/2 below its decision, near misses everywhere else.
    Returns the thresholds and those two images."""
    special, concept = torch_cosines(checker, pixel_values)
    images, concepts = concept.shape
    special_weights = special.max(axis=0) + 0.004
    # Special concept 0 lands between its cosines: the images above it get the adjustment.
    order = np.sort(special[:, 0])
    gaps = [(order[i + 1] - order[i], i) for i in range(1, images - 2)]
    width, below = max(gaps)
    assert width > 2 * MARGIN, "no clear gap in the special-care cosines"
    special_weights[0] = (order[below] + order[below + 1]) / 2
    adjusted = special[:, 0] > special_weights[0]
    adjustment = np.where(adjusted, 0.01, 0.0)

    def slack(image, column, weight):
        others = [j for j in range(images) if j != image]
        return min(weight + 0.0005 - (concept[j, column] + adjustment[j]) for j in others)

    def best_concept(image, offset, exclude):
        candidates = [(slack(image, c, concept[image, c] + offset), c) for c in range(concepts) if c not in exclude]
        return max(candidates)

    candidates = [i for i in range(images) if adjusted[i]]
    best = max((best_concept(i, MARGIN, ()), i) for i in candidates)
    (adjusted_slack, adjusted_concept), adjusted_image = best
    direct_candidates = [i for i in range(images) if not adjusted[i]]
    (direct_slack, direct_concept), direct_image = max(
        (best_concept(i, -MARGIN, (adjusted_concept,)), i) for i in direct_candidates
    )
    assert min(adjusted_slack, direct_slack) > MARGIN / 2, "no concept separates one image from the others"
    concept_weights = (concept + adjustment[:, None]).max(axis=0) + 0.004
    concept_weights[adjusted_concept] = concept[adjusted_image, adjusted_concept] + MARGIN
    concept_weights[direct_concept] = concept[direct_image, direct_concept] - MARGIN
    return special_weights, concept_weights, adjusted_image, direct_image


@pytest.fixture(scope="module")
def designed(tmp_path_factory):
    """A tiny random checker with designed thresholds, saved without a preprocessor config (so the
    export uses its shipped Stable Diffusion one, which crops to the 224 the tiny ViT takes)."""
    checker = build_tiny_random_safety_checker(seed=0)
    special, concept, adjusted_image, direct_image = design_thresholds(checker, pil_pixel_values(sample_images()))
    with torch.no_grad():
        checker.special_care_embeds_weights.copy_(torch.from_numpy(special))
        checker.concept_embeds_weights.copy_(torch.from_numpy(concept))
    folder = save_safety_checker_folder(checker, tmp_path_factory.mktemp("checker") / "checker")
    return {"folder": folder, "adjusted": adjusted_image, "direct": direct_image}


@pytest.fixture(scope="module")
def checker_bundle(tiny_pipeline_dir, designed, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle-checker") / "bundle"
    export_bundle(
        load_source(str(tiny_pipeline_dir)),
        out,
        ExportOptions(weights="fp32"),
        safety_checker=load_safety_checker(str(designed["folder"])),
    )
    return out


def concepts_of(checker):
    return SafetyConcepts(
        **{name: getattr(checker, name).detach().numpy().astype(np.float32) for name in bundle.SAFETY_CONCEPT_TENSORS}
    )


PREPROCESSOR_CONFIGS = [
    {},  # CLIP's defaults: Stable Diffusion's
    {"size": 224, "crop_size": 224},  # the old int forms
    {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 48}, "resample": 2},
    {"size": {"shortest_edge": 20}, "crop_size": {"height": 32, "width": 32}},  # crop larger: zero padding
    {"size": {"height": 30, "width": 50}, "do_center_crop": False, "image_mean": 0.5, "image_std": 0.25},
    {"do_rescale": False},
]


@pytest.mark.parametrize("config", PREPROCESSOR_CONFIGS)
def test_clip_preprocess_is_transformers_pil_processor(config):
    images = sample_images()
    ours = clip_preprocess(images, config)
    expected = pil_pixel_values(images, config)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert list(ours.shape) == clip_input_shape(config, len(images))
    # Bit-exact, not just within 1e-6: the same PIL resize, the same float64-then-float32 rescale.
    assert np.array_equal(ours, expected)
    # Sensitive to the details: one pixel column of crop offset, or rounding the long side, shows.
    shifted = clip_preprocess([image[:, 1:] for image in images], config)
    assert np.abs(shifted - expected).max() > 1e-3


def test_clip_preprocess_of_the_bundle_config(checker_bundle):
    config = load_preprocessor_config(checker_bundle)
    assert config["crop_size"] == {"height": 224, "width": 224} and config["resample"] == 3
    images = sample_images()
    assert np.array_equal(clip_preprocess(images, config), pil_pixel_values(images))


def driven_checker(projection_dim):
    """diffusers' checker whose vision tower returns clip_input itself, so its scoring can be fed
    any image embeddings."""

    class Passthrough(torch.nn.Module):
        def forward(self, clip_input):
            return clip_input, clip_input

    checker = build_tiny_random_safety_checker(seed=1, projection_dim=projection_dim)
    checker.vision_model = Passthrough()
    checker.visual_projection = torch.nn.Identity()
    return checker


def diffusers_flags(checker, embeds):
    _images, flags = checker(clip_input=torch.from_numpy(embeds), images=np.ones((len(embeds), 2, 2, 3)))
    return list(flags)


def test_nsfw_flags_score_exactly_as_diffusers():
    """Embeddings and concepts along axes make every cosine exactly 0 or 1 in both implementations, so
    thresholds one float32 step either side of each rounding boundary test the scoring itself."""
    dim = 16
    checker = driven_checker(dim)
    rng = np.random.default_rng(3)
    boundary = [0.0005, 0.0015, -0.0095, -0.0085, 0.0, 0.02, -0.2]  # 1 - threshold; -0.0095 + 0.01 = 0.0005
    exact_cases = adjustment_mattered = 0
    all_flags = []
    for trial in range(300):
        axes = 4 if trial < 200 else dim  # few axes: many exact matches; all axes: random cosines
        if trial < 200:

            def along(count, axes=axes):
                vectors = np.zeros((count, dim), np.float32)
                vectors[np.arange(count), rng.integers(0, axes, count)] = 2.0 ** rng.integers(-3, 4, count)
                return vectors

            embeds, concept, special = along(8), along(17), along(3)

            def thresholds(count):
                chosen = np.float32(1) - np.float32(rng.choice(boundary, count))
                return np.nextafter(chosen, chosen + np.float32(rng.choice([-1, 0, 1], count)), dtype=np.float32)
        else:
            embeds, concept, special = (rng.standard_normal((n, dim)).astype(np.float32) for n in (8, 17, 3))

            def thresholds(count):
                return rng.uniform(-0.25, 0.45, count).astype(np.float32)

        concepts = SafetyConcepts(concept, special, thresholds(17), thresholds(3))
        with torch.no_grad():
            for name in bundle.SAFETY_CONCEPT_TENSORS:
                getattr(checker, name).copy_(torch.from_numpy(getattr(concepts, name)))
        expected = diffusers_flags(checker, embeds)
        ours = nsfw_flags(embeds, concepts)
        assert ours == expected, trial
        all_flags += ours
        exact_cases += trial < 200
        no_special = SafetyConcepts(concept, special, concepts.concept_embeds_weights, np.full(3, 2, np.float32))
        adjustment_mattered += sum(a != b for a, b in zip(ours, nsfw_flags(embeds, no_special), strict=True))
    assert exact_cases and any(all_flags) and not all(all_flags)
    assert adjustment_mattered > 10


def test_nsfw_flags_rounding_boundary():
    """round(x, 3) > 0 in float32: a score of exactly 0.0005 rounds (half to even) to 0, the next float up flags."""
    axes = np.eye(4, dtype=np.float32)
    embeds = axes[[1, 0]]  # image 0 is orthogonal to the concept (cosine 0), image 1 along it (cosine 1)
    concept, special = axes[[0]], axes[[2]]  # special: cosine 0 for both images

    def flags(concept_threshold, special_threshold=2.0):
        concepts = SafetyConcepts(
            concept, special, np.array([concept_threshold], np.float32), np.array([special_threshold], np.float32)
        )
        return nsfw_flags(embeds, concepts)

    half = np.float32(0.0005)
    assert np.round(half, 3) == 0
    assert flags(-half) == [False, True]  # image 0 scores 0 - (-0.0005) = 0.0005: not flagged
    assert flags(np.nextafter(-half, np.float32(-1))) == [True, True]
    assert flags(1.0) == [False, False]
    # Image 1 scores -0.005, +0.005 once a special score (0.0006, rounding to 0.001) adjusts it.
    assert flags(1.005) == [False, False]
    assert flags(1.005, special_threshold=-0.0006) == [False, True]
    assert flags(1.005, special_threshold=-half) == [False, False]  # a special score of 0.0005 does not count
    assert flags(2.0, special_threshold=-0.5) == [False, False]  # the special concepts never flag by themselves


def test_black_out():
    images = np.random.default_rng(0).random((3, 4, 4, 3)).astype(np.float32)
    result = black_out(images, [False, True, False])
    assert (result[1] == 0).all() and np.array_equal(result[[0, 2]], images[[0, 2]])
    assert result.dtype == images.dtype and images[1].max() > 0  # a copy: the input is untouched
    with pytest.raises(ValueError):
        black_out(images, [True])


def test_runtime_flags_equal_diffusers(checker_bundle, designed):
    images = sample_images()
    config = load_preprocessor_config(checker_bundle)
    concepts = SafetyConcepts.load(checker_bundle)
    model = SafetyCheckerModel(
        ov.Core(),
        checker_bundle / bundle.component_xml(bundle.SAFETY_CHECKER),
        {"clip_input": clip_input_shape(config, len(images))},
        "CPU",
        F32,
    )
    embeds = model(clip_preprocess(images, config))
    ours = nsfw_flags(embeds, concepts)

    reference = StableDiffusionSafetyChecker.from_pretrained(designed["folder"]).eval()
    uint8 = np.stack([np.asarray(Image.fromarray(image).resize((64, 64))) for image in images])
    as_float = uint8.astype(np.float32) / 255
    blacked, expected = reference(clip_input=torch.from_numpy(pil_pixel_values(images)), images=as_float.copy())
    assert ours == list(expected)
    assert ours[designed["adjusted"]] and ours[designed["direct"]] and ours.count(True) == 2
    assert np.array_equal(black_out(as_float, ours), np.asarray(blacked, dtype=np.float32))

    with torch.no_grad():
        pooled = reference.vision_model(torch.from_numpy(pil_pixel_values(images)))[1]
        torch_embeds = reference.visual_projection(pooled)
    assert np.abs(embeds - torch_embeds.numpy()).max() <= 1e-4 * np.abs(torch_embeds.numpy()).max()

    # Without the special-care adjustment the designed image passes, in diffusers and here alike.
    raised = SafetyConcepts(
        concepts.concept_embeds,
        concepts.special_care_embeds,
        concepts.concept_embeds_weights,
        np.full_like(concepts.special_care_embeds_weights, 2.0),
    )
    with torch.no_grad():
        reference.special_care_embeds_weights.fill_(2.0)
    _images, unadjusted = reference(clip_input=torch.from_numpy(pil_pixel_values(images)), images=as_float.copy())
    assert nsfw_flags(embeds, raised) == list(unadjusted)
    assert not unadjusted[designed["adjusted"]] and unadjusted[designed["direct"]]


def test_bundle_records_and_verifies_the_checker(checker_bundle, designed):
    manifest = read_manifest(checker_bundle)
    entry = manifest.components[bundle.SAFETY_CHECKER]
    assert entry["precision"] == "fp32" and entry["file"] == "safety_checker/openvino_model.xml"
    assert entry["source"]["kind"] == "local" and entry["source"]["path"] == str(designed["folder"])
    assert entry["source"]["preprocessor_config"] == SHIPPED_PREPROCESSOR
    assert len(entry["source"]["weights_sha256"]) == 64
    expected = {
        "safety_checker/openvino_model.xml",
        "safety_checker/openvino_model.bin",
        "safety_checker/config.json",
        bundle.FEATURE_EXTRACTOR_CONFIG,
        *(bundle.safety_concept_file(name) for name in bundle.SAFETY_CONCEPT_TENSORS),
    }
    assert expected <= set(manifest.files)
    assert verify_files(checker_bundle, manifest) == []
    index = json.loads((checker_bundle / bundle.MODEL_INDEX_FILE).read_text())
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    config = json.loads((checker_bundle / "safety_checker" / "config.json").read_text())
    assert config["architectures"] == ["StableDiffusionSafetyChecker"] and "_name_or_path" not in config
    model = ov.Core().read_model(checker_bundle / bundle.component_xml(bundle.SAFETY_CHECKER))
    assert str(model.inputs[0].get_partial_shape()) == "[?,3,224,224]"
    assert model.outputs[0].get_any_name() == "image_embeds"
    concepts = SafetyConcepts.load(checker_bundle)
    assert concepts.concept_embeds.shape == (17, 16) and concepts.special_care_embeds_weights.shape == (3,)


def test_genai_still_loads_a_bundle_with_a_checker(checker_bundle):
    genai = pytest.importorskip("openvino_genai")
    image = (
        genai.Text2ImagePipeline(str(checker_bundle), "CPU")
        .generate("a cat", width=64, height=64, num_inference_steps=1, rng_seed=0)
        .data
    )
    assert image.shape == (1, 64, 64, 3)


def test_malformed_concept_files_are_one_line(checker_bundle, tmp_path):
    copy = shutil.copytree(checker_bundle, tmp_path / "bundle")
    path = copy / bundle.safety_concept_file("concept_embeds_weights")
    np.save(path, np.ones(17, np.float64))
    with pytest.raises(BundleError, match="concept_embeds_weights.npy.*re-export the bundle"):
        SafetyConcepts.load(copy)
    np.save(path, np.ones(16, np.float32))
    with pytest.raises(BundleError, match="inconsistent.*re-export"):
        SafetyConcepts.load(copy)
    path.write_bytes(b"garbage")
    with pytest.raises(BundleError, match="concept_embeds_weights.npy.*re-export") as error:
        SafetyConcepts.load(copy)
    assert "\n" not in str(error.value)
    path.unlink()
    with pytest.raises(BundleError, match="concept_embeds_weights.npy"):
        SafetyConcepts.load(copy)


@pytest.fixture
def pipeline_with_checker(tiny_pipeline_dir, designed, tmp_path):
    """The tiny pipeline folder plus safety_checker/ and feature_extractor/, as an SD pipeline ships them."""
    folder = shutil.copytree(tiny_pipeline_dir, tmp_path / "pipeline")
    shutil.copytree(designed["folder"], folder / "safety_checker")
    (folder / "feature_extractor").mkdir()
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(shipped_preprocessor_config()))
    return folder


class ExportCalled(Exception):
    pass


@pytest.mark.parametrize(
    "flags,own,given",
    [([], True, False), (["--no-safety-checker"], False, False), (["--safety-checker", "CHECKER"], False, True)],
)
def test_cli_takes_the_source_checker_unless_refused_or_replaced(
    pipeline_with_checker, designed, tmp_path, monkeypatch, flags, own, given
):
    """What lcm-export hands the export: SOURCE's own checker by default, none with --no-safety-checker,
    only the given one with --safety-checker (the export itself is stubbed: the bundle tests cover it)."""
    import lcm_export.exporter
    from lcm_export.cli import app

    calls = []

    def export_bundle_stub(loaded, out, options, progress, tiny_vae=None, safety_checker=None, **_others):
        calls.append((loaded.safety_checker, safety_checker))
        raise ExportCalled

    monkeypatch.setattr(lcm_export.exporter, "export_bundle", export_bundle_stub)
    flags = [str(designed["folder"]) if flag == "CHECKER" else flag for flag in flags]
    with pytest.raises(ExportCalled):  # in process: typer parses the options as lcm-export does
        app(
            args=[str(pipeline_with_checker), str(tmp_path / "out"), *flags],
            prog_name="lcm-export",
            standalone_mode=False,
        )
    ((source_checker, given_checker),) = calls
    assert (source_checker is not None) == own and (given_checker is not None) == given
    if own:
        assert source_checker.info["kind"] == "source" and source_checker.info["preprocessor_config"] == "source"
    if given:
        assert given_checker.info["kind"] == "local" and given_checker.info["path"] == str(designed["folder"])


def test_export_without_a_checker_has_none(tiny_bundle_fp32):
    manifest = read_manifest(tiny_bundle_fp32)
    assert bundle.SAFETY_CHECKER not in manifest.components
    assert not [name for name in manifest.files if name.startswith(("safety_checker/", "feature_extractor/"))]
    assert SafetyConcepts.load(tiny_bundle_fp32) is None


def test_bad_safety_checker_sources(pipeline_with_checker, tiny_pipeline_dir, tmp_path):
    result = lcm_export("--tiny-random", tmp_path / "out", "--safety-checker", tmp_path / "nowhere")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nowhere" in result.stderr and "--safety-checker" in result.stderr and not (tmp_path / "out").exists()
    both = lcm_export("--tiny-random", tmp_path / "out", "--safety-checker", tmp_path, "--no-safety-checker")
    assert both.returncode != 0 and len(both.stderr.strip().splitlines()) == 1 and "drop one" in both.stderr

    # A whole pipeline folder given as --safety-checker: its checker, with its feature extractor.
    whole = load_safety_checker(str(pipeline_with_checker))
    assert whole.info["preprocessor_config"] == "source" and whole.crop_size == (224, 224)
    with pytest.raises(SourceError, match="no config.json"):
        load_safety_checker(str(tmp_path))
    with pytest.raises(SourceError, match="not a StableDiffusionSafetyChecker"):
        load_safety_checker(str(tiny_pipeline_dir / "text_encoder"))
    with pytest.raises(SourceError, match="hub"):
        load_safety_checker("CompVis/stable-diffusion-safety-checker")  # offline in tests
    small_crop = tmp_path / "small-crop"
    shutil.copytree(pipeline_with_checker / "safety_checker", small_crop)
    (small_crop / "preprocessor_config.json").write_text(json.dumps({"size": 32, "crop_size": 32}))
    with pytest.raises(SourceError, match="32x32.*224x224"):
        load_safety_checker(str(small_crop))
    pickled = pipeline_with_checker / "safety_checker"
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(SourceError, match="pickle.*--allow-pickle.*--no-safety-checker") as error:
        load_source(str(pipeline_with_checker))
    assert "\n" not in str(error.value)


# More prompts than images: diffusers repeats the images, with a deprecation warning; compared on purpose.
@pytest.mark.filterwarnings("ignore:You have passed .* text prompts:FutureWarning")
def test_every_task_flags_and_blacks_out_like_diffusers(
    checker_bundle, designed, tiny_pipeline_dir, tmp_path, torch_draws
):
    """Text-to-image and image-to-image through the runtime's check stage: with a threshold set between
    the generated images' scores, the same images are flagged (and black) as in diffusers' pipelines."""
    from lcm_runtime import LCMImg2ImgPipeline, LCMPipeline
    from lcm_runtime.image import to_uint8

    prompts = ["a cat", "a dog", "a red car", "a house", "a tree", "a boat"]
    kwargs = dict(num_inference_steps=2, guidance_scale=8.0, output_type="np")
    reference = diffusers.LatentConsistencyModelPipeline.from_pretrained(tiny_pipeline_dir)
    reference.set_progress_bar_config(disable=True)
    plain = reference(prompts, generator=torch.Generator().manual_seed(3), **kwargs).images
    checker = StableDiffusionSafetyChecker.from_pretrained(designed["folder"]).eval()
    _, concept = torch_cosines(checker, pil_pixel_values(list(to_uint8(plain))))
    # The concept whose scores split the images with the widest gap, far from the rounding to 3 decimals.
    gaps = [(np.diff(np.sort(concept[:, c]))[1:-1].max(initial=0), c) for c in range(concept.shape[1])]
    gap, column = max(gaps)
    assert gap > 0.004, gaps
    scores = np.sort(concept[:, column])
    cut = int(np.argmax(np.diff(scores)[1:-1])) + 1
    threshold = np.float32((scores[cut] + scores[cut + 1]) / 2)
    special = np.full(checker.special_care_embeds_weights.shape, 2.0, np.float32)
    weights = np.full(checker.concept_embeds_weights.shape, 2.0, np.float32)
    weights[column] = threshold
    with torch.no_grad():
        checker.special_care_embeds_weights.copy_(torch.from_numpy(special))
        checker.concept_embeds_weights.copy_(torch.from_numpy(weights))
    bundle_copy = tmp_path / "bundle"
    shutil.copytree(checker_bundle, bundle_copy)
    np.save(bundle_copy / bundle.safety_concept_file("special_care_embeds_weights"), special)
    np.save(bundle_copy / bundle.safety_concept_file("concept_embeds_weights"), weights)

    extractor = ClipPil(**load_preprocessor_config(bundle_copy))
    checked = diffusers.LatentConsistencyModelPipeline.from_pretrained(
        tiny_pipeline_dir, safety_checker=checker, feature_extractor=extractor
    )
    checked.set_progress_bar_config(disable=True)
    expected = checked(prompts, generator=torch.Generator().manual_seed(3), **kwargs)
    assert 0 < sum(expected.nsfw_content_detected) < len(prompts)

    text = LCMPipeline.from_pretrained(bundle_copy, precision="f32", cache_dir=False)
    ours = text(prompts, generator=torch_draws(3), **kwargs)
    assert ours.nsfw_content_detected == list(expected.nsfw_content_detected)
    flagged = np.array(ours.nsfw_content_detected)
    assert (ours.images[flagged] == 0).all() and (ours.images[~flagged].max(axis=(1, 2, 3)) > 0).all()
    diff = np.abs(to_uint8(ours.images).astype(int) - to_uint8(expected.images).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001
    assert "safety_checker" in ours.timings

    unchecked = LCMPipeline.from_pretrained(bundle_copy, precision="f32", cache_dir=False, safety_checker=False)
    assert unchecked(prompts[:1], generator=torch_draws(3), **kwargs).nsfw_content_detected is None
    source = Image.fromarray(to_uint8(plain)[0])
    img2img = LCMImg2ImgPipeline.from_pipe(text)
    reference_img2img = diffusers.LatentConsistencyModelImg2ImgPipeline(**checked.components)
    reference_img2img.set_progress_bar_config(disable=True)
    expected = reference_img2img(
        prompts[:3], image=source, strength=0.5, generator=torch.Generator().manual_seed(4), **kwargs
    )
    ours = img2img(prompts[:3], image=source, strength=0.5, generator=torch_draws(4), **kwargs)
    assert ours.nsfw_content_detected == list(expected.nsfw_content_detected)


def test_lcm_run_records_whether_the_checker_ran(checker_bundle, tmp_path):
    env = {**os.environ, "LCM_CACHE_DIR": "off"}
    for options, expected in (((), "Safety checker: on"), (("--no-safety-checker",), "Safety checker: off")):
        out = tmp_path / f"cat{len(options)}.png"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "lcm_runtime.cli",
                "a cat",
                "--model",
                str(checker_bundle),
                "--steps",
                "1",
                "--seed",
                "1",
                "--output",
                str(out),
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert run.returncode == 0, run.stderr
        assert expected in Image.open(out).text["parameters"]

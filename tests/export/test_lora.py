"""LoRAs fused at export (--lcm-lora, --lora): the fused weights are diffusers' own load + fuse, in both
file formats (kohya and diffusers/peft) with 3x3 convolutions and the text encoder; the bundle is a cfg
bundle whose IR computes the fused model and whose manifest records each LoRA; every unusable LoRA
is one line."""

from __future__ import annotations

import hashlib
import shutil
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402
from cli_helpers import assert_one_line_export_error as assert_one_line_error  # noqa: E402
from cli_helpers import lcm_export  # noqa: E402
from sd15_helpers import (  # noqa: E402
    CONV3X3_TARGET,
    TEXT_ENCODER_TARGETS,
    UNET_TARGETS,
    build_tiny_sd15_pipeline,
    fused_by_hand,
    lora_tensors,
    run_cli_in_process,
    save_tiny_sd15_pipeline,
    write_kohya_lora,
    write_peft_lora,
)

from lcm_runtime.bundle import CFG, TINY_VAE_DECODER, component_xml, read_manifest, verify_files  # noqa: E402

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
RANK = 4
LCM_ALPHA, STYLE_ALPHA = 4.0, 2.0  # scales alpha / rank of 1 and 0.5


@pytest.fixture(scope="module")
def sd15_dir(tmp_path_factory):
    """A tiny Stable Diffusion folder: no time_cond_proj_dim, SD1.5's PNDM scheduler config."""
    return save_tiny_sd15_pipeline(tmp_path_factory.mktemp("sd15") / "pipeline", seed=0)


@pytest.fixture(scope="module")
def factors():
    """The random LoRA factors: an "LCM-LoRA" on the UNet only (as latent-consistency's), a style LoRA
    on the UNet and the text encoder; both adapt 3x3 convolutions."""
    pipeline = build_tiny_sd15_pipeline(0)
    return {
        "lcm": lora_tensors(pipeline, seed=1, rank=RANK, alpha=LCM_ALPHA, text_encoder_targets=()),
        "style": lora_tensors(pipeline, seed=2, rank=RANK, alpha=STYLE_ALPHA),
    }


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory, factors):
    """{(role, format): path}: each LoRA written in kohya and in diffusers/peft format."""
    folder = tmp_path_factory.mktemp("loras")
    files = {}
    for role, tensors in factors.items():
        files[(role, "kohya")] = write_kohya_lora(folder / f"{role}-kohya.safetensors", tensors)
        (folder / role).mkdir()
        files[(role, "peft")] = write_peft_lora(folder / role / f"{role}-peft.safetensors", tensors)
    return files


def _fused_by_lcm_export(sd15_dir, *loras):
    """lcm-export's load (with --lcm-lora) and fusion, as run_export does them: (pipeline, records)."""
    from lcm_export.lora import fuse_loras, resolve_loras
    from lcm_export.source import load_source

    loaded = load_source(str(sd15_dir), lcm_lora=True)
    resolved = resolve_loras(str(loras[0]), [str(lora) for lora in loras[1:]])
    return loaded.pipeline, fuse_loras(loaded.pipeline, resolved)


def _fused_by_diffusers(sd15_dir, loras_and_scales):
    """diffusers' own recipe on its own load of the folder: load_lora_weights, set_adapters, fuse_lora."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(sd15_dir, safety_checker=None)
    names = []
    for index, (path, _scale) in enumerate(loras_and_scales):
        with warnings.catch_warnings():  # peft warns at the second adapter, which is the recipe
            warnings.filterwarnings("ignore", "Already found a `peft_config` attribute", UserWarning)
            pipeline.load_lora_weights(str(path), adapter_name=f"reference_{index}")
        names.append(f"reference_{index}")
    pipeline.set_adapters(names, adapter_weights=[scale for _path, scale in loras_and_scales])
    pipeline.fuse_lora(components=["unet", "text_encoder"], adapter_names=names)
    pipeline.unload_lora_weights()
    return pipeline


def _state(pipeline, component):
    return {key: value.detach().clone() for key, value in getattr(pipeline, component).state_dict().items()}


@pytest.mark.parametrize("file_format", ["kohya", "peft"])
def test_fused_weights_are_diffusers_load_and_fuse(sd15_dir, lora_files, factors, file_format):
    lcm, style = lora_files[("lcm", file_format)], lora_files[("style", file_format)]
    mine, records = _fused_by_lcm_export(sd15_dir, lcm, f"{style}:0.5")
    reference = _fused_by_diffusers(sd15_dir, [(lcm, 1.0), (style, 0.5)])
    base = build_tiny_sd15_pipeline(0)
    for component in ("unet", "text_encoder"):
        fused, expected, original = _state(mine, component), _state(reference, component), _state(base, component)
        assert fused.keys() == expected.keys() == original.keys(), component  # no LoRA layer is left
        for key in expected:
            assert torch.allclose(fused[key], expected[key], atol=1e-6, rtol=0), (component, key)
    # Independently of diffusers: W + scale * alpha / rank * B @ A (an einsum for the 3x3 convolutions),
    # summed over both LoRAs; every other weight untouched.
    unet, text_encoder = _state(mine, "unet"), _state(mine, "text_encoder")
    unet_base, text_base = _state(base, "unet"), _state(base, "text_encoder")
    for component, fused, original, targets in (
        ("unet", unet, unet_base, UNET_TARGETS),
        ("text_encoder", text_encoder, text_base, TEXT_ENCODER_TARGETS),
    ):
        for module in targets:
            expected = original[f"{module}.weight"]
            for role, scale in (("lcm", 1.0), ("style", 0.5)):
                if (component, module) in factors[role]:
                    down, up, alpha = factors[role][(component, module)]
                    expected = fused_by_hand(expected, down, up, scale * alpha / RANK)
            assert torch.allclose(fused[f"{module}.weight"], expected, atol=1e-6, rtol=0), (component, module)
            assert not torch.allclose(fused[f"{module}.weight"], original[f"{module}.weight"], atol=1e-4)
        adapted = {f"{module}.weight" for module in targets}
        for key in original:
            if key not in adapted:
                assert torch.equal(fused[key], original[key]), (component, key)
    assert unet[f"{CONV3X3_TARGET}.weight"].shape[-2:] == (3, 3)
    assert records == [
        {"name": lcm.name, "sha256": hashlib.sha256(lcm.read_bytes()).hexdigest(), "scale": 1.0, "role": "lcm"},
        {"name": style.name, "sha256": hashlib.sha256(style.read_bytes()).hexdigest(), "scale": 0.5, "role": "style"},
    ]


def test_the_scale_scales_the_delta(sd15_dir, lora_files):
    lcm, style = lora_files[("lcm", "kohya")], lora_files[("style", "peft")]
    lcm_only = _state(_fused_by_lcm_export(sd15_dir, lcm)[0], "unet")
    half = _state(_fused_by_lcm_export(sd15_dir, lcm, f"{style}:0.5")[0], "unet")
    double = _state(_fused_by_lcm_export(sd15_dir, lcm, f"{style}:2")[0], "unet")
    changed = 0
    for key, value in lcm_only.items():
        delta_half, delta_double = half[key] - value, double[key] - value
        assert torch.allclose(delta_double, 4 * delta_half, atol=1e-6, rtol=1e-5), key
        changed += bool(delta_half.abs().max() > 1e-4)
    assert changed == len(UNET_TARGETS)


def test_a_folder_of_a_diffusers_lora_is_its_pytorch_lora_weights(tmp_path, sd15_dir, lora_files):
    from lcm_export.lora import parse_lora, resolve_lora

    folder = tmp_path / "saved"
    folder.mkdir()
    shutil.copy(lora_files[("style", "peft")], folder / "pytorch_lora_weights.safetensors")
    shutil.copy(lora_files[("style", "kohya")], folder / "other.safetensors")
    resolved = resolve_lora(parse_lora(f"{folder}:0.25"))
    assert resolved.path == (folder / "pytorch_lora_weights.safetensors").resolve()
    assert resolved.spec.scale == 0.25 and resolved.name == "saved/pytorch_lora_weights.safetensors"


def test_a_hub_lora_comes_through_the_hub_cache(tmp_path, monkeypatch, lora_files):
    from huggingface_hub import constants

    from lcm_export.lora import parse_lora, resolve_lora

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--latent-consistency--lcm-lora-sdv1-5"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(lora_files[("lcm", "kohya")], repo / "snapshots" / commit / "pytorch_lora_weights.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_lora(parse_lora("latent-consistency/lcm-lora-sdv1-5", "lcm"))
    assert resolved.name == "latent-consistency/lcm-lora-sdv1-5"
    assert resolved.sha256 == hashlib.sha256(lora_files[("lcm", "kohya")].read_bytes()).hexdigest()
    assert resolved.record()["role"] == "lcm"


@pytest.fixture(scope="module")
def fused_bundle(tmp_path_factory, sd15_dir, lora_files):
    """lcm-export SD OUT --weights fp32 --lcm-lora <kohya> --lora <peft>:0.5 --tiny-vae <folder>, from the
    command line."""
    from lcm_export.tiny_vae import build_tiny_random_vae

    taesd = tmp_path_factory.mktemp("taesd") / "taesd"
    build_tiny_random_vae(0).save_pretrained(taesd)
    out = tmp_path_factory.mktemp("fused") / "bundle"
    result = lcm_export(
        sd15_dir,
        out,
        "--weights",
        "fp32",
        "--lcm-lora",
        lora_files[("lcm", "kohya")],
        "--lora",
        f"{lora_files[('style', 'peft')]}:0.5",
        "--tiny-vae",
        taesd,
    )
    assert result.returncode == 0, result.stderr
    assert "fuse 2 LoRAs" in result.stderr and "fused LoRAs: lcm-kohya.safetensors x 1" in result.stderr
    return out


def test_the_bundle_records_each_lora_and_cfg_mode(fused_bundle, lora_files):
    manifest = read_manifest(fused_bundle)
    assert verify_files(fused_bundle, manifest) == []
    assert manifest.model.guidance_mode == CFG and manifest.model.time_cond_proj_dim is None
    lcm, style = lora_files[("lcm", "kohya")], lora_files[("style", "peft")]
    assert manifest.loras == [
        {"name": lcm.name, "sha256": hashlib.sha256(lcm.read_bytes()).hexdigest(), "scale": 1.0, "role": "lcm"},
        {"name": style.name, "sha256": hashlib.sha256(style.read_bytes()).hexdigest(), "scale": 0.5, "role": "style"},
    ]
    assert manifest.source["kind"] == "local"
    assert manifest.components[TINY_VAE_DECODER]["source"]["kind"] == "local"  # --tiny-vae on the fused model


@pytest.mark.parametrize(
    "loras",
    [
        {"name": "x", "sha256": "0" * 64, "scale": 1.0},  # not a list
        [{"name": "x", "sha256": "ab", "scale": 1.0}],
        [{"name": 3, "sha256": "0" * 64, "scale": 1.0}],
        [{"name": "x", "sha256": "0" * 64, "scale": float("nan")}],
        [{"name": "x", "sha256": "0" * 64, "scale": True}],
        ["x.safetensors"],
    ],
)
def test_a_manifest_with_malformed_loras_is_refused(fused_bundle, loras):
    from lcm_runtime.bundle import Manifest
    from lcm_runtime.errors import BundleError

    data = read_manifest(fused_bundle).to_dict()
    assert Manifest.from_dict(data).loras == data["loras"] != []
    data["loras"] = loras
    with pytest.raises(BundleError, match="malformed: (loras|a fused LoRA)") as error:
        Manifest.from_dict(data)
    assert "\n" not in str(error.value)
    del data["loras"]  # a manifest written before LoRA fusion existed
    assert Manifest.from_dict(data).loras == []


def test_the_ir_computes_the_fused_model(fused_bundle, sd15_dir, lora_files):
    """The exported UNet and text encoder IRs give diffusers' fused model's outputs at f32 (1e-5)."""
    reference = _fused_by_diffusers(
        sd15_dir, [(lora_files[("lcm", "kohya")], 1.0), (lora_files[("style", "peft")], 0.5)]
    )
    unfused = build_tiny_sd15_pipeline(0)
    core = ov.Core()
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(2, 4, 9, 12, generator=generator)
    hidden = torch.randn(2, 77, reference.unet.config.cross_attention_dim, generator=generator)
    timestep = torch.tensor([499], dtype=torch.int64)
    unet_ir = core.compile_model(fused_bundle / component_xml("unet"), "CPU", F32)
    assert {port.get_any_name() for port in unet_ir.inputs} == {"sample", "timestep", "encoder_hidden_states"}
    inputs = {"sample": sample.numpy(), "timestep": timestep.numpy(), "encoder_hidden_states": hidden.numpy()}
    actual = unet_ir(inputs)[0]
    with torch.no_grad():
        expected = reference.unet(sample, timestep, hidden).sample.numpy()
        before = unfused.unet(sample, timestep, hidden).sample.numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    assert np.abs(actual - before).max() > 1e-3  # the LoRAs are in it

    ids = reference.tokenizer(
        ["a photo of a cat", "a watercolor lighthouse"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    text_ir = core.compile_model(fused_bundle / component_xml("text_encoder"), "CPU", F32)
    actual = text_ir({"input_ids": ids.numpy()})[0]
    with torch.no_grad():
        expected = reference.text_encoder(ids).last_hidden_state.numpy()
        before = unfused.text_encoder(ids).last_hidden_state.numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    assert np.abs(actual - before).max() > 1e-3


# Every unusable LoRA, and every LoRA option that does not fit the source, is one line.


def test_a_stable_diffusion_source_without_lcm_lora_names_it(sd15_dir, tmp_path):
    result = lcm_export(sd15_dir, tmp_path / "out")
    assert_one_line_error(
        result.returncode, result.stderr, "time_cond_proj_dim", "--lcm-lora latent-consistency/lcm-lora-sdv1-5"
    )
    assert "tokenizer" not in result.stderr and not (tmp_path / "out").exists()  # refused before loading


def test_a_style_lora_alone_does_not_make_an_lcm(sd15_dir, lora_files, tmp_path, capsys):
    code, err = run_cli_in_process([sd15_dir, tmp_path / "out", "--lora", lora_files[("style", "peft")]], capsys)
    assert_one_line_error(code, err, "not an LCM-distilled model", "--lcm-lora latent-consistency/lcm-lora-sdv1-5")


def test_an_lcm_source_with_lcm_lora_is_refused(tiny_pipeline_dir, lora_files, tmp_path, capsys):
    code, err = run_cli_in_process(
        [tiny_pipeline_dir, tmp_path / "out", "--lcm-lora", lora_files[("lcm", "kohya")]], capsys
    )
    assert_one_line_error(code, err, "already LCM-distilled", "drop --lcm-lora")
    code, err = run_cli_in_process(["--tiny-random", tmp_path / "out", "--lcm-lora", "x.safetensors"], capsys)
    assert_one_line_error(code, err, "--tiny-random is already an LCM")
    assert not (tmp_path / "out").exists()


def _bogus_lora(path, pipeline, extra):
    from safetensors.torch import save_file

    tensors = {}
    for (_component, module), (down, up, alpha) in lora_tensors(pipeline, seed=5, text_encoder_targets=()).items():
        name = "lora_unet_" + module.replace(".", "_")
        tensors.update(
            {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(alpha)}
        )
    tensors.update(extra)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    "case,words",
    [
        ("kohya-unknown-module", ["2 LoRA keys match no module", "unet.down_blocks.0.bogus.proj.lora_A.weight"]),
        ("peft-unknown-module", ["match no module", "unet.down_blocks.7.resnets.0.conv1.lora_A.weight"]),
        ("peft-unknown-component", ["neither the UNet nor the text encoder", "prior.blocks.0.lora_A.weight"]),
        ("kohya-sdxl-text-encoder", ["is an SDXL LoRA", "lora_te2_"]),
        ("peft-sdxl-cross-attention", ["is an SDXL LoRA", "2048"]),
        ("wrong-shape", ["down_blocks.0.resnets.0.conv1", "another model"]),
        ("dora", ["DoRA"]),
    ],
)
def test_unusable_loras_are_one_line(sd15_dir, tmp_path, capsys, case, words):
    pipeline = build_tiny_sd15_pipeline(0)
    down, up = torch.randn(4, 32), torch.randn(32, 4)
    path = tmp_path / f"{case}.safetensors"
    if case == "kohya-unknown-module":
        _bogus_lora(
            path,
            pipeline,
            {
                "lora_unet_down_blocks_0_bogus_proj.lora_down.weight": down,
                "lora_unet_down_blocks_0_bogus_proj.lora_up.weight": up,
            },
        )
    elif case == "kohya-sdxl-text-encoder":
        _bogus_lora(
            path,
            pipeline,
            {
                "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": down,
                "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": up,
            },
        )
    elif case == "dora":
        _bogus_lora(path, pipeline, {"lora_unet_down_blocks_0_resnets_0_conv1.dora_scale": torch.ones(32, 1, 1, 1)})
    else:
        from safetensors.torch import save_file

        factors = lora_tensors(pipeline, seed=6, text_encoder_targets=())
        tensors = {}
        for (_component, module), (lora_down, lora_up, _alpha) in factors.items():
            tensors[f"unet.{module}.lora_A.weight"] = lora_down
            tensors[f"unet.{module}.lora_B.weight"] = lora_up
        if case == "peft-unknown-module":
            tensors["unet.down_blocks.7.resnets.0.conv1.lora_A.weight"] = torch.randn(4, 32, 3, 3)
            tensors["unet.down_blocks.7.resnets.0.conv1.lora_B.weight"] = torch.randn(32, 4, 1, 1)
        elif case == "peft-unknown-component":
            tensors["prior.blocks.0.lora_A.weight"], tensors["prior.blocks.0.lora_B.weight"] = down, up
        elif case == "peft-sdxl-cross-attention":
            key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
            tensors[f"{key}.lora_A.weight"] = torch.randn(4, 2048)
        elif case == "wrong-shape":
            tensors["unet.down_blocks.0.resnets.0.conv1.lora_A.weight"] = torch.randn(4, 64, 3, 3)
        save_file(tensors, str(path))
    code, err = run_cli_in_process([sd15_dir, tmp_path / "out", "--lcm-lora", path], capsys)
    line = assert_one_line_error(code, err, *words)
    assert f"--lcm-lora {path}" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "value,words",
    [
        ("style.safetensors:strong", ["'strong' is not a scale", "LORA:SCALE"]),
        ("style.safetensors:inf", ["'inf' is not a scale"]),
        (":0.5", ["no LoRA before the scale"]),
    ],
)
def test_a_bad_scale_is_one_line(sd15_dir, tmp_path, value, words):
    result = lcm_export(sd15_dir, tmp_path / "out", "--lcm-lora", "x.safetensors", "--lora", value)
    assert_one_line_error(result.returncode, result.stderr, f"--lora {value}", *words)
    assert "load" not in result.stderr  # refused before any stage


@pytest.mark.parametrize(
    "value,words",
    [
        ("missing/style.safetensors", ["--lora missing/style.safetensors", "no such file"]),
        ("someone/some-style-lora", ["someone/some-style-lora", "cannot reach the Hugging Face hub", ".safetensors"]),
    ],
)
def test_a_missing_lora_is_one_line_before_loading(sd15_dir, tmp_path, value, words):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"), "HF_HOME": str(tmp_path / "hf-home")}
    result = lcm_export(sd15_dir, tmp_path / "out", "--lcm-lora", "missing/lcm.safetensors", env_extra=env)
    assert_one_line_error(result.returncode, result.stderr, "--lcm-lora missing/lcm.safetensors", "no such file")
    result = lcm_export(sd15_dir, tmp_path / "out", "--lora", value, env_extra=env)
    assert_one_line_error(result.returncode, result.stderr, *words)
    assert "load /" not in result.stderr and not (tmp_path / "out").exists()


def test_a_pickle_lora_is_refused(tmp_path):
    from lcm_export.lora import LoraError, parse_lora, resolve_lora

    path = tmp_path / "style.pt"
    path.write_bytes(b"not really")
    with pytest.raises(LoraError, match="pickle") as error:
        resolve_lora(parse_lora(str(path)))
    assert "\n" not in str(error.value)


def test_parse_lora():
    from lcm_export.lora import parse_lora

    assert parse_lora("owner/name").scale == 1.0
    assert parse_lora("owner/name:0.75") == parse_lora(" owner/name:0.75 ")
    assert parse_lora("owner/name:-1").scale == -1.0
    spec = parse_lora(r"C:\loras\style.safetensors")  # a drive letter is not a scale
    assert spec.source == r"C:\loras\style.safetensors" and spec.scale == 1.0
    spec = parse_lora(r"C:\loras\style.safetensors:0.5")
    assert spec.source == r"C:\loras\style.safetensors" and spec.scale == 0.5


def test_lcm_run_records_the_fused_loras_as_a1111s_lora_hashes(fused_bundle, lora_files, tmp_path):
    from cli_helpers import lcm_run
    from PIL import Image

    out = tmp_path / "image.png"
    result = lcm_run(
        "a cat",
        "--model",
        fused_bundle,
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "1",
        "--negative-prompt",
        "blurry",
        "--guidance",
        "1.5",
        "-o",
        out,
    )
    assert result.returncode == 0, result.stderr
    parameters = Image.open(out).text["parameters"]
    lcm, style = lora_files[("lcm", "kohya")], lora_files[("style", "peft")]
    hashes = [hashlib.sha256(path.read_bytes()).hexdigest()[:12] for path in (lcm, style)]
    assert f'Lora hashes: "{lcm.stem}: {hashes[0]}, {style.stem}: {hashes[1]}"' in parameters
    assert parameters.splitlines()[1] == "Negative prompt: blurry"

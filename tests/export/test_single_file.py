"""Single-file checkpoints (one .safetensors in the original Stable Diffusion key layout) as SOURCE,
offline: the shipped configs are runwayml/stable-diffusion-v1-5's (and its inpainting UNet's); a checkpoint
loads to exactly the weights of its diffusers folder and exports, LCM-LoRA fused, to the same bundle; an SD1.5
inpainting checkpoint (9-channel UNet) loads likewise; other architectures and broken files are one line.

A tiny checkpoint does not fit the shipped SD1.5 configs, so its tests pass the tiny pipeline's own
folder as the configs (``single_file_config``); real checkpoints use the shipped ones."""

from __future__ import annotations

import hashlib

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from cli_helpers import assert_one_line_export_error as assert_one_line_error  # noqa: E402
from cli_helpers import lcm_export  # noqa: E402
from sd15_helpers import (  # noqa: E402
    build_tiny_sd15_pipeline,
    lora_tensors,
    run_cli_in_process,
    save_single_file,
    save_tiny_sd15_pipeline,
    write_kohya_lora,
)

from lcm_runtime.bundle import CFG, read_manifest, verify_files  # noqa: E402


@pytest.fixture(scope="module")
def sd15_dir(tmp_path_factory):
    return save_tiny_sd15_pipeline(tmp_path_factory.mktemp("sd15") / "pipeline", seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The same tiny model as sd15_dir, as one original-layout .safetensors."""
    return save_single_file(
        tmp_path_factory.mktemp("single-file") / "tiny-sd15.safetensors", build_tiny_sd15_pipeline(0)
    )


@pytest.fixture(scope="module")
def lcm_lora(tmp_path_factory):
    factors = lora_tensors(build_tiny_sd15_pipeline(0), seed=1, alpha=4.0, text_encoder_targets=())
    return write_kohya_lora(tmp_path_factory.mktemp("lcm-lora") / "lcm-lora.safetensors", factors)


def test_the_shipped_configs_are_stable_diffusion_1_5():
    """Built on the meta device, the shipped configs give SD1.5's models: its parameter counts, its
    scheduler, and the tokenizer of the real CLIP vocabulary."""
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lcm_export.single_file import sd15_config_folder
    from lcm_export.tiny import build_clip_tokenizer
    from lcm_export.tokenizer import configured_tokenizer_json

    with sd15_config_folder() as folder:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
            text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        scheduler = LCMScheduler.from_pretrained(folder, subfolder="scheduler")
    counts = [sum(p.numel() for p in model.parameters()) for model in (unet, vae, text_encoder)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]
    assert unet.config.time_cond_proj_dim is None and unet.config.cross_attention_dim == 768
    assert unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1) == 512
    assert configured_tokenizer_json(tokenizer, 77) == configured_tokenizer_json(build_clip_tokenizer(), 77)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    config = dict(scheduler.config)
    assert (config["beta_start"], config["beta_end"], config["beta_schedule"]) == (0.00085, 0.012, "scaled_linear")
    assert (config["steps_offset"], config["set_alpha_to_one"], config["prediction_type"]) == (1, False, "epsilon")


def test_a_checkpoint_loads_to_the_weights_of_its_folder(checkpoint, sd15_dir):
    from lcm_export.source import load_source

    single = load_source(str(checkpoint), lcm_lora=True, single_file_config=sd15_dir)
    folder = load_source(str(sd15_dir), lcm_lora=True)
    for component in ("unet", "vae", "text_encoder"):
        mine, theirs = (
            getattr(single.pipeline, component).state_dict(),
            getattr(folder.pipeline, component).state_dict(),
        )
        assert mine.keys() == theirs.keys(), component
        assert all(torch.equal(mine[key], theirs[key]) for key in mine), component
    assert dict(single.pipeline.scheduler.config) == dict(folder.pipeline.scheduler.config)
    assert single.info == {
        "kind": "single-file",
        "path": str(checkpoint.resolve()),
        "weights_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "config": str(sd15_dir.resolve()),
    }


def _export(source, out, lcm_lora, config=None):
    """lcm-export SOURCE OUT --lcm-lora LORA --weights int8 --token-downsampling 2, step by step as
    run_export does (which has no way to pass a tiny model's configs)."""
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.lora import fuse_loras, resolve_loras
    from lcm_export.source import load_source

    loaded = load_source(str(source), lcm_lora=True, single_file_config=config)
    loaded.loras = fuse_loras(loaded.pipeline, resolve_loras(str(lcm_lora), []))
    options = ExportOptions(weights="int8", token_downsampling=2, guidance_mode=CFG)
    export_bundle(loaded, out, options)
    return read_manifest(out)


def test_a_checkpoint_exports_the_bundle_of_its_folder(checkpoint, sd15_dir, lcm_lora, tmp_path):
    """With LCM-LoRA fused, int8 weights and token downsampling: the same files."""
    single = _export(checkpoint, tmp_path / "single", lcm_lora, config=sd15_dir)
    folder = _export(sd15_dir, tmp_path / "folder", lcm_lora)
    assert verify_files(tmp_path / "single", single) == []
    assert single.files == folder.files
    assert (
        single.loras
        == folder.loras
        == [
            {
                "name": lcm_lora.name,
                "sha256": hashlib.sha256(lcm_lora.read_bytes()).hexdigest(),
                "scale": 1.0,
                "role": "lcm",
            }
        ]
    )
    assert single.model.guidance_mode == CFG and single.source["kind"] == "single-file"
    assert {name: entry["precision"] for name, entry in single.components.items()} == {
        "text_encoder": "int8",
        "unet": "int8",
        "vae_decoder": "int8",
        "vae_encoder": "int8",
    }
    assert single.components["unet"]["token_downsampling"]["factor"] == 2


def test_a_tiny_checkpoint_does_not_fit_the_shipped_configs(checkpoint):
    """Loaded with the SD1.5 configs, diffusers' shape error is one line."""
    from lcm_export.source import SourceError, load_source

    with pytest.raises(SourceError, match="cannot load .* as a Stable Diffusion 1.5 checkpoint") as error:
        load_source(str(checkpoint), lcm_lora=True)
    assert "\n" not in str(error.value) and "expected shape" in str(error.value)


def _write(path, tensors):
    from safetensors.torch import save_file

    save_file({key: torch.zeros(shape) for key, shape in tensors.items()}, str(path))
    return path


SD_PARTS = {
    "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
    "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 8),
}


@pytest.mark.parametrize(
    "case,tensors,words",
    [
        (
            "sdxl",
            {**SD_PARTS, "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (8,)},
            ["is an SDXL checkpoint", "Stable Diffusion 1.x"],
        ),
        (
            "sd2",
            {**SD_PARTS, "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (8, 1024)},
            ["Stable Diffusion 2.x"],
        ),
        (
            "sd2-inpainting",
            {
                **SD_PARTS,
                "model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3),
                "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (8, 1024),
            },
            ["is an SD2 inpainting checkpoint", "Stable Diffusion 1.x"],
        ),
        ("lora", {"lora_unet_conv_in.lora_down.weight": (4, 4, 3, 3)}, ["is a LoRA", "--lora"]),
        ("other", {"encoder.weight": (4, 4)}, ["not a Stable Diffusion checkpoint", "diffusers folder"]),
        ("unet-only", {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3)}, ["no VAE or text encoder"]),
    ],
)
def test_other_files_are_one_line(tmp_path, capsys, lcm_lora, case, tensors, words):
    path = _write(tmp_path / f"{case}.safetensors", tensors)
    code, err = run_cli_in_process([path, tmp_path / "out", "--lcm-lora", lcm_lora], capsys)
    line = assert_one_line_error(code, err, *words)
    assert str(path) in line and not (tmp_path / "out").exists()


def test_a_checkpoint_without_lcm_lora_names_it(tmp_path):
    """The shipped SD1.5 UNet config has no time_cond_proj_dim: refused before loading, naming the fix."""
    path = _write(tmp_path / "sd15.safetensors", SD_PARTS)
    result = lcm_export(path, tmp_path / "out")
    line = assert_one_line_error(result.returncode, result.stderr, "--lcm-lora latent-consistency/lcm-lora-sdv1-5")
    assert str(path) in line and "not an LCM-distilled model" in line


def test_revision_with_a_checkpoint_is_refused(checkpoint):
    from lcm_export.source import SourceError, load_source

    with pytest.raises(SourceError, match="--revision only applies to hub ids"):
        load_source(str(checkpoint), revision="main", lcm_lora=True)


# --- SD1.5 inpainting checkpoints (a 9-channel UNet: latents, mask, masked picture's latents) ---------------


def test_the_shipped_inpainting_configs_are_stable_diffusion_1_5_inpainting():
    """runwayml/stable-diffusion-inpainting is SD1.5 with a 9-channel conv_in: the same configs but that one."""
    from diffusers import UNet2DConditionModel

    from lcm_export.single_file import sd15_config_folder, unet_config

    with sd15_config_folder(inpainting=True) as inpainting, sd15_config_folder() as plain:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(inpainting, subfolder="unet"))
        differing = sorted(
            str(path.relative_to(inpainting))
            for path in inpainting.rglob("*")
            if path.is_file() and path.read_bytes() != (plain / path.relative_to(inpainting)).read_bytes()
        )
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964 + 320 * 5 * 3 * 3  # 5 more input channels
    assert (unet.config.in_channels, unet.config.out_channels, unet.config.time_cond_proj_dim) == (9, 4, None)
    assert differing == ["unet/config.json"]
    assert {key for key, value in unet_config(None, inpainting=True).items() if unet_config(None)[key] != value} == {
        "in_channels"
    }


@pytest.fixture(scope="module")
def inpainting_dir(tmp_path_factory):
    return save_tiny_sd15_pipeline(tmp_path_factory.mktemp("sd15-inpainting") / "pipeline", seed=0, in_channels=9)


def test_an_inpainting_checkpoint_loads_to_the_weights_of_its_folder_and_takes_lcm_lora(
    tmp_path, inpainting_dir, lcm_lora
):
    from lcm_export.lora import fuse_loras, resolve_loras
    from lcm_export.single_file import check_checkpoint
    from lcm_export.source import load_source

    path = save_single_file(tmp_path / "tiny-inpainting.safetensors", build_tiny_sd15_pipeline(0, in_channels=9))
    assert check_checkpoint(path) == "inpainting"
    single = load_source(str(path), lcm_lora=True, single_file_config=inpainting_dir)
    folder = load_source(str(inpainting_dir), lcm_lora=True)
    assert single.pipeline.unet.config.in_channels == 9 and single.pipeline.unet.conv_in.weight.shape[1] == 9
    for component in ("unet", "vae", "text_encoder"):
        mine, theirs = (
            getattr(single.pipeline, component).state_dict(),
            getattr(folder.pipeline, component).state_dict(),
        )
        assert mine.keys() == theirs.keys(), component
        assert all(torch.equal(mine[key], theirs[key]) for key in mine), component
    assert single.info["config"] == str(inpainting_dir.resolve())
    # LCM-LoRA (made for SD1.5's UNet) fuses into the inpainting UNet: it adapts no layer the channels change.
    conv_in = single.pipeline.unet.conv_in.weight.detach().clone()
    resnet = single.pipeline.unet.down_blocks[0].resnets[0].conv1.weight.detach().clone()
    loras = fuse_loras(single.pipeline, resolve_loras(str(lcm_lora), []))
    assert [entry["role"] for entry in loras] == ["lcm"]
    assert torch.equal(single.pipeline.unet.conv_in.weight, conv_in)
    assert not torch.equal(single.pipeline.unet.down_blocks[0].resnets[0].conv1.weight, resnet)


def test_an_inpainting_checkpoint_loads_with_the_shipped_inpainting_configs(tmp_path, capsys, lcm_lora):
    """Without --config the shipped SD1.5 inpainting configs describe it (a tiny one does not fit them: one line
    naming inpainting, diffusers' shape error with the 9 input channels it expected)."""
    from lcm_export.source import SourceError, load_source

    path = save_single_file(tmp_path / "tiny-inpainting.safetensors", build_tiny_sd15_pipeline(0, in_channels=9))
    with pytest.raises(SourceError, match="as a Stable Diffusion 1.5 inpainting checkpoint") as error:
        load_source(str(path), lcm_lora=True)
    assert "\n" not in str(error.value) and "expected shape" in str(error.value)
    code, err = run_cli_in_process([path, tmp_path / "out", "--lcm-lora", lcm_lora], capsys)
    line = assert_one_line_error(code, err, "Stable Diffusion 1.5 inpainting checkpoint")
    assert str(path) in line and not (tmp_path / "out").exists()

"""Garbage in a bundle's JSON (manifest, scheduler config, tokenizer) works or is a one-line LCMError.

Property-based: hypothesis mutates valid documents (replacing, deleting and adding values anywhere,
with wrong types, huge ints, NaN, unicode and nested junk) and feeds raw garbage. Each case must
either load or raise the project's own error; any other exception, or a hang, fails the test.
"""

from __future__ import annotations

import copy
import dataclasses
import faulthandler
import json
import math
import os
import tempfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lcm_runtime import bundle  # noqa: E402
from lcm_runtime.errors import BundleError, LCMError  # noqa: E402
from lcm_runtime.schedulers import scheduling_lcm  # noqa: E402
from lcm_runtime.schedulers.scheduling_lcm import LCMScheduler, LCMSchedulerConfig  # noqa: E402
from lcm_runtime.tokenizer import PromptTokenizer, PromptTruncatedWarning  # noqa: E402

# A few seconds per property on a shared 2-core machine; no deadline flakiness from a busy neighbour.
FAST = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None)


@pytest.fixture(autouse=True)
def _no_hang():
    """A hang (even in Rust code holding the GIL) kills the run with tracebacks instead of blocking it."""
    faulthandler.dump_traceback_later(180, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "..", "/etc/hostname", "\ud800", "\x00", "é" * 3, "1000", "NaN", "true"])
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _mutate(draw: Any, value: Any) -> Any:
    """Replace, delete or add one value somewhere inside ``value`` (descending at random)."""
    if not isinstance(value, (dict, list)) or not value:
        return draw(json_values) if draw(st.booleans()) else value
    action = draw(st.sampled_from(["replace", "descend", "descend", "descend", "delete", "add"]))
    if action == "replace":
        return draw(json_values)
    if isinstance(value, dict):
        key = draw(st.sampled_from(sorted(value)))
        if action == "descend":
            value[key] = _mutate(draw, value[key])
        elif action == "delete":
            del value[key]
        else:
            value[draw(st.text(max_size=8) | st.sampled_from(sorted(value)))] = draw(json_values)
    else:
        index = draw(st.integers(0, len(value) - 1))
        if action == "descend":
            value[index] = _mutate(draw, value[index])
        elif action == "delete":
            del value[index]
        else:
            value.insert(index, draw(json_values))
    return value


@st.composite
def mutations_of(draw: Any, base: Any, most: int = 3) -> Any:
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, most))):
        value = _mutate(draw, value)
    return value


# --- manifest.json ----------------------------------------------------------------------------


def valid_manifest() -> dict[str, Any]:
    facts = bundle.ModelFacts(
        latent_channels=4,
        vae_scale_factor=8,
        vae_scaling_factor=0.18215,
        sample_size=64,
        text_max_length=77,
        time_cond_proj_dim=256,
    )
    return bundle.Manifest(
        source={"kind": "hub", "id": "x/y"},
        versions={"openvino": "2026.4"},
        components={"unet": {"precision": "fp16", "file": "unet/openvino_model.xml"}},
        model=facts,
        files={
            "unet/openvino_model.bin": {"size": 7, "sha256": "ab" * 32},
            "scheduler/c_out.npy": {"size": 0, "sha256": ""},
        },
        calibration={"samples": 4},
    ).to_dict()


path_segments = st.sampled_from(
    [
        "..",
        ".",
        "",
        "unet",
        "a b",
        "C:",
        "c:\\x",
        "\\",
        "é",
        "\x00",
        "\n",
        "\ud800",
        "~",
        "...",
        "manifest.json",
        "x" * 300,
    ]
) | st.text(max_size=5)
bundle_paths = st.lists(path_segments, min_size=1, max_size=4).map("/".join) | st.sampled_from(
    [
        "/etc/hostname",
        "../../../etc/hostname",
        "C:\\Windows\\win.ini",
        "\\\\server\\share",
        "unet/../../x",
        "//x",
        "./x",
    ]
)
file_entries = st.fixed_dictionaries({"size": st.integers(0, 2**70), "sha256": st.text(max_size=64)}) | json_values


def _stays_inside(name: str) -> bool:
    """An independent check of what an accepted manifest path must be."""
    parts = PurePosixPath(name).parts
    joined = os.path.normpath(os.path.join("/bundle", name))
    return (
        not name.startswith("/")
        and ".." not in parts
        and str(PurePosixPath(name)) == name
        and "\\" not in name
        and ":" not in name
        and "\x00" not in name
        and "\n" not in name
        and joined.startswith("/bundle/")
    )


def _check_accepted(manifest: bundle.Manifest) -> None:
    for name, entry in manifest.files.items():
        assert _stays_inside(name), name
        assert type(entry["size"]) is int and entry["size"] >= 0 and isinstance(entry["sha256"], str)
    for component in manifest.components.values():
        assert "file" not in component or _stays_inside(component["file"])
    for item in dataclasses.fields(bundle.ModelFacts):
        value = getattr(manifest.model, item.name)
        kinds = {"int": int, "int | None": (int, type(None)), "float": (int, float), "str": str}
        assert isinstance(value, kinds[str(item.type)]), item.name
        assert not isinstance(value, bool) and (not isinstance(value, float) or math.isfinite(value)), item.name
    manifest.digest()
    with tempfile.TemporaryDirectory() as empty:
        problems = bundle.verify_files(Path(empty), manifest)
    assert {(p.path, p.problem) for p in problems} == {(name, "missing") for name in manifest.files}


def _works_or_bundle_error(function: Any, *args: Any, fix: str = "re-") -> Any:
    """function(*args), or None if it raised a one-line BundleError that says the fix."""
    try:
        return function(*args)
    except BundleError as error:
        message = str(error)
        assert message and "\n" not in message and fix in message, message
        return None


@FAST
@given(mutations_of(valid_manifest()))
def test_mutated_manifests_load_or_fail_cleanly(data):
    manifest = _works_or_bundle_error(bundle.Manifest.from_dict, data)
    if manifest is not None:
        _check_accepted(manifest)


@FAST
@given(
    st.dictionaries(bundle_paths, file_entries, max_size=4),
    st.dictionaries(st.text(max_size=8), json_values, max_size=2),
)
def test_manifest_file_lists_load_or_fail_cleanly(files, component):
    data = valid_manifest()
    data["files"] = files
    data["components"]["extra"] = component
    manifest = _works_or_bundle_error(bundle.Manifest.from_dict, data)
    if manifest is not None:
        _check_accepted(manifest)


@FAST
@given(st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_raw_manifest_bytes_load_or_fail_cleanly(content):
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / bundle.MANIFEST_FILE).write_bytes(content)
        _works_or_bundle_error(bundle.read_manifest, Path(root))


def _with(path: str, value: Any) -> dict[str, Any]:
    data = valid_manifest()
    *parents, last = path.split(">")  # file names have dots
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


@pytest.mark.parametrize(
    "path,value,words",
    [
        ("format_version", True, ["format version"]),
        ("format_version", float("nan"), ["format version"]),
        ("files", [["a", {"size": 1, "sha256": ""}]], ["files", "not an object"]),
        ("files>unet/openvino_model.bin", {"size": "7", "sha256": "ab"}, ["unet/openvino_model.bin", "size"]),
        ("files>unet/openvino_model.bin", {"size": True, "sha256": "ab"}, ["unet/openvino_model.bin"]),
        ("files>unet/openvino_model.bin", {"size": -1, "sha256": "ab"}, ["unet/openvino_model.bin"]),
        ("files>unet/openvino_model.bin", {"size": 7}, ["unet/openvino_model.bin", "sha256"]),
        ("files>unet/openvino_model.bin", [7, "ab"], ["unet/openvino_model.bin"]),
        ("files>../../../etc/hostname", {"size": 7, "sha256": "ab"}, ["'../../../etc/hostname'", "re-download"]),
        ("model", [1, 2], ["model", "not an object"]),
        ("model>latent_channels", "4", ["latent_channels"]),
        ("model>latent_channels", 4.0, ["latent_channels"]),
        ("model>latent_channels", 0, ["latent_channels"]),
        ("model>sample_size", 10**400, ["sample_size", "huge"]),
        ("model>vae_scaling_factor", float("inf"), ["vae_scaling_factor"]),
        ("model>default_guidance_scale", float("nan"), ["default_guidance_scale"]),
        ("model>guidance_embedding", [], ["guidance_embedding"]),
        ("model>unknown_fact", 1, ["model facts"]),
        ("components>unet", "fp16", ["unet", "not an object"]),
        ("components>unet>file", "../../etc/hostname", ["'../../etc/hostname'"]),
        ("components>unet>file", 7, ["unet"]),
        ("source", "hub", ["source"]),
        ("calibration", "yes", ["calibration"]),
    ],
)
def test_malformed_manifest_values_name_the_problem(path, value, words):
    with pytest.raises(BundleError) as error:
        bundle.Manifest.from_dict(_with(path, value))
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("content", ["[" * 100_000, "1" * 5000, '{"format": "\\ud800"', "\xff\xfe", "[]", "null"])
def test_pathological_json_is_a_bundle_error(tmp_path, content):
    (tmp_path / bundle.MANIFEST_FILE).write_bytes(content.encode("utf-8", "surrogatepass"))
    with pytest.raises(BundleError, match="corrupted|not an lcm-openvino manifest"):
        bundle.read_manifest(tmp_path)


# --- the UNet and VAE configs a folder without manifest is described by ------------------------------

UNET_CONFIG = {
    "in_channels": 4,
    "sample_size": 96,
    "time_cond_proj_dim": 256,
    "block_out_channels": [320, 640, 1280, 1280],
}
VAE_CONFIG = {"block_out_channels": [128, 256, 512, 512], "scaling_factor": 0.18215, "latent_channels": 4}


@FAST
@given(mutations_of(UNET_CONFIG), mutations_of(VAE_CONFIG), st.integers(1, 77) | json_values)
@example({**UNET_CONFIG, "time_cond_proj_dim": -5}, VAE_CONFIG, 77)  # an `int | None` fact, out of range
@example({**UNET_CONFIG, "time_cond_proj_dim": 2**40}, VAE_CONFIG, 77)
def test_model_facts_from_garbage_configs_work_or_fail_cleanly(unet_config, vae_config, text_max_length):
    if not isinstance(unet_config, dict) or not isinstance(vae_config, dict):
        return  # read_json refuses a config that is not an object (test_pathological_json_is_a_bundle_error)
    facts = _works_or_bundle_error(bundle.ModelFacts.from_configs, unet_config, vae_config, text_max_length, fix="")
    if facts is None:
        return  # a one-line BundleError that says the fix: checked by _works_or_bundle_error
    checks = {  # every field's type has a check: a fact of another type fails here instead of going unchecked
        "int": lambda value: isinstance(value, int) and 1 <= value <= bundle.MAX_FACT,
        "int | None": lambda value: value is None or (isinstance(value, int) and 1 <= value <= bundle.MAX_FACT),
        "float": lambda value: isinstance(value, (int, float)) and math.isfinite(value),
        "str": lambda value: isinstance(value, str),
    }
    for item in dataclasses.fields(bundle.ModelFacts):
        value = getattr(facts, item.name)
        assert not isinstance(value, bool), item.name
        assert checks[str(item.type)](value), (item.name, value)


# --- scheduler/scheduler_config.json ------------------------------------------------------------

VALID_SCHEDULER = {  # what lcm-export writes (diffusers' LCMScheduler config), plus keys we ignore
    "_class_name": "LCMScheduler",
    "_diffusers_version": "0.42.1",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "timestep_spacing": "leading",
    "trained_betas": None,
}


def _run_scheduler(config: Any) -> None:
    """Parse, build (NumPy tables), schedule and take one step: what the runtime does with a config."""
    parsed = LCMSchedulerConfig.from_dict(config)
    scheduler = LCMScheduler(parsed)
    scheduler.set_timesteps(4)
    sample = np.ones((1, 4, 2, 2), dtype=np.float32)
    with np.errstate(all="ignore"):
        scheduler.step(sample * 0.1, int(scheduler.timesteps[0]), sample, np.random.default_rng(0))


def _works_or_lcm_error(function: Any, *args: Any) -> None:
    try:
        function(*args)
    except LCMError as error:
        assert str(error) and "\n" not in str(error), str(error)


@FAST
@given(mutations_of(VALID_SCHEDULER, most=4))
def test_mutated_scheduler_configs_work_or_fail_cleanly(config):
    _works_or_lcm_error(_run_scheduler, config)


numbers = st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True)


@FAST
@given(
    st.dictionaries(st.sampled_from(sorted(LCMSchedulerConfig.__dataclass_fields__)), numbers | json_values, max_size=5)
)
def test_scheduler_fields_of_any_value_work_or_fail_cleanly(config):
    _works_or_lcm_error(_run_scheduler, config)


valid_fields = {
    "num_train_timesteps": st.integers(50, 5000),
    "beta_start": st.floats(0, 0.01),
    "beta_end": st.floats(0.01, 0.5),
    "beta_schedule": st.sampled_from(["linear", "scaled_linear"]),
    "original_inference_steps": st.integers(4, 50),
    "clip_sample": st.booleans(),
    "clip_sample_range": st.floats(0.1, 10),
    "set_alpha_to_one": st.booleans(),
    "prediction_type": st.sampled_from(["epsilon", "sample", "v_prediction"]),
    "thresholding": st.booleans(),
    "dynamic_thresholding_ratio": st.floats(0.5, 1.0),
    "sample_max_value": st.floats(0.5, 10) | st.integers(1, 10),
    "timestep_scaling": st.floats(0.5, 20) | st.integers(1, 20),
}


@FAST
@given(st.fixed_dictionaries({}, optional=valid_fields))
def test_valid_scheduler_configs_are_accepted_unchanged(config):
    parsed = LCMSchedulerConfig.from_dict(config)
    for key, value in config.items():  # the very objects: numerics stay bit-identical to before the checks
        assert getattr(parsed, key) is value, key
    _run_scheduler(config)


def test_every_scheduler_field_has_a_rule():
    assert set(scheduling_lcm._FIELD_RULES) == set(LCMSchedulerConfig.__dataclass_fields__)
    assert LCMSchedulerConfig.from_dict(VALID_SCHEDULER) == LCMSchedulerConfig()


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_train_timesteps", 0),
        ("num_train_timesteps", -1000),
        ("num_train_timesteps", "1000"),
        ("num_train_timesteps", 1000.0),
        ("num_train_timesteps", True),
        ("num_train_timesteps", 10**30),
        ("num_train_timesteps", float("nan")),
        ("original_inference_steps", 0),
        ("original_inference_steps", 2000),
        ("beta_start", "0.00085"),
        ("beta_start", float("nan")),
        ("beta_start", -0.1),
        ("beta_end", float("inf")),
        ("beta_end", 1.5),
        ("beta_schedule", "cosine"),
        ("beta_schedule", ["linear"]),
        ("beta_schedule", None),
        ("prediction_type", "noise"),
        ("clip_sample", "false"),
        ("clip_sample", 0),
        ("clip_sample_range", 0),
        ("thresholding", None),
        ("dynamic_thresholding_ratio", 2),
        ("sample_max_value", -1),
        ("timestep_scaling", 0),
        ("timestep_scaling", {"x": 1}),
        ("timestep_scaling", 1e17),  # x 999 timesteps, squared, overflows float32: NaN images
        ("timestep_scaling", 1e300),
    ],
)
def test_garbage_scheduler_values_name_the_field(field, value):
    with pytest.raises(BundleError) as error:
        LCMSchedulerConfig.from_dict({**VALID_SCHEDULER, field: value})
    message = str(error.value)
    assert field in message and "scheduler_config.json" in message and "re-export" in message, message
    assert "\n" not in message, message


def test_the_largest_accepted_timestep_scaling_gives_finite_tables():
    with np.errstate(all="raise"):  # an overflow is an error here, not a warning
        tables = scheduling_lcm.compute_tables(
            LCMSchedulerConfig.from_dict({**VALID_SCHEDULER, "timestep_scaling": 1e15})
        )
    assert all(np.isfinite(table).all() for table in tables.values())
    with pytest.raises(BundleError, match="timestep_scaling"):
        LCMSchedulerConfig.from_dict({**VALID_SCHEDULER, "num_train_timesteps": 1, "timestep_scaling": 1e30})


@pytest.mark.parametrize("config", [[], "scheduler", None, 7])
def test_a_scheduler_config_that_is_not_an_object_is_a_bundle_error(config):
    with pytest.raises(BundleError, match="not an object"):
        LCMSchedulerConfig.from_dict(config)


# --- tokenizer/tokenizer.json ---------------------------------------------------------------------


def small_tokenizer_json() -> str:
    """A small CLIP-like `tokenizers` file (BPE, lower-casing, start/end tokens, padding, truncation)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {
        "<|startoftext|>": 0,
        "<|endoftext|>": 1,
        "a</w>": 2,
        "c": 3,
        "a": 4,
        "t</w>": 5,
        "at</w>": 6,
        "cat</w>": 7,
        "d": 8,
        "o": 9,
        "g</w>": 10,
        "og</w>": 11,
        "dog</w>": 12,
        "!</w>": 13,
    }
    merges = [("a", "t</w>"), ("c", "at</w>"), ("o", "g</w>"), ("d", "og</w>")]
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
    tokenizer.enable_truncation(8)
    tokenizer.enable_padding(length=8, pad_id=1, pad_token="<|endoftext|>")
    return tokenizer.to_str()


VALID_TOKENIZER = json.loads(small_tokenizer_json())


def _load_and_encode(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_bytes(content)
        tokenizer = PromptTokenizer.from_file(path, 8)
    with warnings.catch_warnings():
        # The last prompt is longer than 8 tokens, which a mutated vocabulary may or may not keep so.
        warnings.simplefilter("ignore", PromptTruncatedWarning)
        ids = tokenizer(["a cat", "", "a dog a cat a dog a cat a dog !"])
    assert ids.dtype == np.int64 and ids.shape == (3, 8)


def test_the_small_tokenizer_itself_works():
    _load_and_encode(json.dumps(VALID_TOKENIZER).encode())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_text(json.dumps(VALID_TOKENIZER))
        tokenizer = PromptTokenizer.from_file(path, 8)
    with pytest.warns(PromptTruncatedWarning, match="longer than 8 tokens"):
        tokenizer(["a dog a cat a dog a cat a dog !"])


@FAST
@given(mutations_of(VALID_TOKENIZER, most=3))
def test_mutated_tokenizer_files_work_or_fail_cleanly(data):
    try:
        content = json.dumps(data).encode("utf-8", "surrogatepass")
    except ValueError:  # a dict key json cannot write: not a file anyone could ship
        return
    _works_or_lcm_error(_load_and_encode, content)


@FAST
@given(st.binary(max_size=300) | json_values.map(lambda value: json.dumps(value).encode()))
def test_raw_tokenizer_bytes_work_or_fail_cleanly(content):
    _works_or_lcm_error(_load_and_encode, content)


# --- through lcm-run, on a real bundle whose manifest vouches for the garbage ---------------------------


def _lcm_run(*args: object) -> Any:
    import subprocess
    import sys

    env = {**os.environ, "LCM_CACHE_DIR": "off", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lcm_runtime.cli", *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )


def _rewrite(root: Path, name: str, edit: Any) -> None:
    """Change one bundle file and record it in the manifest, so that only its content is wrong."""
    path = root / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    manifest_path = root / bundle.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = {"size": path.stat().st_size, "sha256": bundle.sha256_file(path)}
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "name,edit,words",
    [
        (bundle.SCHEDULER_CONFIG, lambda c: {**c, "num_train_timesteps": "lots"}, ["num_train_timesteps", "'lots'"]),
        (bundle.SCHEDULER_CONFIG, lambda c: {**c, "beta_schedule": "cosine"}, ["beta_schedule", "'cosine'"]),
        (bundle.SCHEDULER_CONFIG, lambda c: [c], ["scheduler_config.json", "not a JSON object"]),
        # A post-processor template naming a token it does not define: tokenizers panics (in Rust) on the first prompt.
        (
            bundle.TOKENIZER_JSON,
            lambda t: {**t, "post_processor": {**VALID_TOKENIZER["post_processor"], "special_tokens": {}}},
            ["cannot load the tokenizer", "re-export"],
        ),
    ],
    ids=["steps-string", "unknown-schedule", "not-an-object", "tokenizer-panic"],
)
def test_lcm_run_reports_garbage_configs_in_one_line(tiny_bundle_fp32, tmp_path, name, edit, words):
    import shutil

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_fp32, root)
    _rewrite(root, name, edit)
    result = _lcm_run("a cat", "--model", root, "--seed", "1", "--steps", "1", "--output", tmp_path / "png")
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and "panicked" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "png").exists() or not any((tmp_path / "png").iterdir())


@pytest.mark.parametrize(
    "name,edit,words",
    [
        ("unet/config.json", lambda c: {**c, "block_out_channels": 4}, ["unet/config.json", "block_out_channels"]),
        (
            "vae_decoder/config.json",
            lambda c: {**c, "block_out_channels": []},
            ["vae_decoder/config.json", "block_out_channels"],
        ),
        ("vae_decoder/config.json", lambda c: {**c, "block_out_channels": [128, "256"]}, ["block_out_channels"]),
        ("unet/config.json", lambda c: {**c, "in_channels": "four"}, ["config.json", "'four'"]),
        ("unet/config.json", lambda c: {**c, "sample_size": []}, ["config.json"]),
        ("vae_decoder/config.json", lambda c: {**c, "scaling_factor": float("nan")}, ["vae_scaling_factor"]),
        ("text_encoder/config.json", lambda c: {**c, "max_position_embeddings": None}, ["config.json", "NoneType"]),
    ],
)
def test_garbage_in_the_configs_of_a_folder_without_manifest_is_a_bundle_error(
    tiny_bundle_fp32, tmp_path, name, edit, words
):
    """No manifest (an optimum-cli folder): the facts come from the configs, so their garbage must stop there."""
    import shutil

    from lcm_runtime.loading import open_model_folder

    root = tmp_path / "folder"
    shutil.copytree(tiny_bundle_fp32, root)
    (root / bundle.MANIFEST_FILE).unlink()
    open_model_folder(root)  # control: the folder opens before the edit
    path = root / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(BundleError) as error:
        open_model_folder(root)
    message = str(error.value)
    assert "\n" not in message and "re-export" in message, message
    for word in words:
        assert word in message, message

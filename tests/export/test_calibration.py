"""Calibration prompts: the shipped list, local files through `datasets`, and clear errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from lcm_export.calibration import default_prompts, load_prompts  # noqa: E402
from lcm_runtime.errors import InputError  # noqa: E402

PROMPTS = ["a red fox in the snow", "a lighthouse at dusk", "ramen, food photography"]


def test_shipped_prompts_are_varied():
    prompts = default_prompts()
    assert len(prompts) >= 32 and len(set(prompts)) == len(prompts)
    prompts_again, source = load_prompts(None, 5)
    assert prompts_again == prompts[:5] and source.endswith("calibration_prompts.txt")


def test_cycles_when_more_prompts_are_needed():
    assert load_prompts(None, len(default_prompts()) + 2)[0][-2:] == default_prompts()[:2]


def test_text_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n\n")
    assert load_prompts(str(path), 3) == (PROMPTS, str(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", "saved"])
def test_local_datasets(tmp_path, suffix):
    table = datasets.Dataset.from_dict({"id": [1, 2, 3], "prompt": PROMPTS})
    if suffix == ".jsonl":
        path = tmp_path / "prompts.jsonl"
        path.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    elif suffix == ".csv":
        path = tmp_path / "prompts.csv"
        table.to_csv(str(path))
    elif suffix == ".parquet":
        path = tmp_path / "prompts.parquet"
        table.to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        table.save_to_disk(str(path))
    assert load_prompts(str(path), 2) == (PROMPTS[:2], str(path))


def test_dataset_without_prompt_column(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"label": 1}) + "\n")
    with pytest.raises(InputError, match="no prompt column"):
        load_prompts(str(path), 2)


def test_unknown_dataset_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(InputError, match="cannot load the calibration dataset") as error:
        load_prompts("someone/not-a-dataset", 4)
    assert "\n" not in str(error.value)


def test_quantize_with_a_local_dataset_records_it(export_tiny, tmp_path_factory):
    import hashlib

    from lcm_runtime.bundle import read_manifest, verify_files

    path = tmp_path_factory.mktemp("calibration") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"caption": p}) + "\n" for p in PROMPTS))
    bundle = export_tiny("fp16", quantize_unet="int8", calibration_size=8, calibration_dataset=str(path))
    manifest = read_manifest(bundle)
    assert verify_files(bundle, manifest) == []
    calibration = manifest.calibration
    assert calibration["dataset"] == str(path) and calibration["samples"] == 8 and calibration["prompts"] == 2
    assert calibration["prompts_sha256"] == hashlib.sha256("\n".join(PROMPTS[:2]).encode()).hexdigest()

"""benchmarks.import_modes compares OpenVINO's ways into a compiled model in fresh processes."""

import importlib
import json


def test_modes_take_turns_and_give_the_same_outputs(benchmarks_package, tiny_bundle_fp32, tmp_path, capsys):
    import_modes = importlib.import_module("benchmarks.import_modes")
    out = tmp_path / "trials.json"
    modes = ["index", "ov-cache", "ov-cache-size"]
    import_modes.main(
        [str(tiny_bundle_fp32), "--rounds", "2", "--size", "64", "--modes", ",".join(modes), "--out", str(out)]
    )
    printed = capsys.readouterr().out
    trials = json.loads(out.read_text())["trials"]
    assert set(trials) == set(modes) and all(len(trials[mode]) == 2 for mode in modes)
    for mode in modes:
        assert all("failed" not in trial for trial in trials[mode]), trials[mode]
        assert 0 < trials[mode][0]["compiled_seconds"] < trials[mode][0]["spawn_to_ready_seconds"]
        assert f"| {mode} | " in printed
    checksums = {trial["output_checksum"] for mode in modes for trial in trials[mode]}
    assert len(checksums) == 1  # every way in runs the same compiled model
    # OPTIMIZE_SIZE leaves the weights out of its blob.
    assert trials["ov-cache-size"][0]["blob_bytes"] < trials["ov-cache"][0]["blob_bytes"]

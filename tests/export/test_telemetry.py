"""An export sends nothing over the network: OpenVINO's conversion API and NNCF keep their telemetry
stubs in any process that imported lcm_export first (lcm_export/telemetry.py says why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each telemetry event forks a sender process (os.fork through multiprocessing), so counting forks
# counts events. Without lcm_export imported first this conversion and compression forked 18 times.
CONVERT_AND_COMPRESS = """
import os, sys
forks = []
os.register_at_fork(before=lambda: forks.append(1))
import lcm_export
import nncf, openvino as ov, torch
model = ov.convert_model(torch.nn.Linear(64, 64), example_input=torch.ones(1, 64))
nncf.compress_weights(model)
print("forks", len(forks), "telemetry", sys.modules["openvino_telemetry"])
"""

# What openvino_telemetry reads to decide whether to send: CI markers turn it off, so they must not
# hide a regression here; a fresh HOME has no opt-out file, as on a new user's machine.
TELEMETRY_OFF_MARKERS = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")


def test_a_conversion_and_a_compression_fork_no_telemetry_sender(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("nncf")
    env = {key: value for key, value in os.environ.items() if key not in TELEMETRY_OFF_MARKERS}
    env["HOME"] = str(tmp_path)
    completed = subprocess.run(
        [sys.executable, "-c", CONVERT_AND_COMPRESS], capture_output=True, text=True, env=env, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.splitlines()[-1] == "forks 0 telemetry None", completed.stdout[-3000:]
    assert list(tmp_path.iterdir()) == []  # the telemetry writes its client id under ~/intel


def test_once_openvino_imported_its_telemetry_the_switch_says_it_could_not() -> None:
    code = (
        "import sys\nimport openvino\n"
        "assert sys.modules['openvino_telemetry'] is not None, 'openvino imports its telemetry'\n"
        "from lcm_export.telemetry import keep_openvino_telemetry_off\n"
        "assert keep_openvino_telemetry_off() is False\n"
        "assert sys.modules['openvino_telemetry'] is not None\nprint('OK')"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.strip() == "OK", completed.stderr[-3000:]

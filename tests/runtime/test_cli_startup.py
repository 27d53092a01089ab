"""`lcm-run --help` must answer without importing openvino (cold start on edge boxes)."""

import subprocess
import sys


def test_help_does_not_import_openvino():
    code = ("import sys; from lcm_runtime.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'openvino' not in sys.modules, 'openvino imported'\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('OK')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--steps" in result.stdout and result.stdout.strip().endswith("OK")


def test_unknown_option_is_one_line_and_nonzero():
    result = subprocess.run([sys.executable, "-m", "lcm_runtime.cli", "a cat", "--stepz", "3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--stepz" in result.stderr

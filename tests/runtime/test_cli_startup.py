"""`lcm-run --help` must answer without importing openvino (cold start on edge boxes)."""

import subprocess
import sys


def run_fresh_python(code: str, timeout: float = 120) -> str:
    """Run ``code`` in a new interpreter (a clean sys.modules); fail on an error, return its stdout."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_does_not_import_openvino():
    code = (
        "import sys; from lcm_runtime.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'openvino' not in sys.modules, 'openvino imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('OK')"
    )
    stdout = run_fresh_python(code)
    assert "--steps" in stdout and stdout.strip().endswith("OK")


def test_parsing_the_command_line_imports_no_validation_library():
    """typer 0.29 parses through pydantic: 0.09 s per start. pyproject keeps typer below it."""
    code = (
        "import sys\nfrom typer.main import get_command\nfrom lcm_runtime.cli import generate_app\n"
        "context = get_command(generate_app).make_context('lcm-run', ['a cat', '--height', '512', '--seed', '7'])\n"
        "assert context.params['height'] == 512 and context.params['seed'] == 7, context.params\n"
        "assert 'pydantic' not in sys.modules, 'pydantic imported'\nprint('OK')"
    )
    assert run_fresh_python(code).strip() == "OK"


def test_unknown_option_is_one_line_and_nonzero():
    result = subprocess.run(
        [sys.executable, "-m", "lcm_runtime.cli", "a cat", "--stepz", "3"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--stepz" in result.stderr


def test_runtime_skips_openvinos_conversion_api_but_keeps_it_usable():
    """The runtime never converts models: importing it must not pay for openvino.tools.ovc (and its
    telemetry, urllib, http.client), while openvino.convert_model still works when asked for."""
    code = (
        "import sys\nimport lcm_runtime.pipeline\nimport openvino\n"
        "assert 'openvino.tools.ovc' not in sys.modules, 'conversion API imported'\n"
        "assert 'openvino_telemetry' not in sys.modules, 'telemetry imported'\n"
        "from openvino.tools.ovc import convert_model\n"
        "assert openvino.convert_model is convert_model\n"
        "try:\n    openvino.no_such_name\nexcept AttributeError:\n    pass\n"
        "else:\n    raise AssertionError('no AttributeError')\n"
        "print('OK')"
    )
    assert run_fresh_python(code).strip() == "OK"


def test_openvino_imported_first_is_left_as_it_is():
    code = (
        "import sys\nimport openvino\nconvert = openvino.convert_model\nimport lcm_runtime.pipeline\n"
        "assert openvino.convert_model is convert and '__getattr__' not in vars(openvino)\nprint('OK')"
    )
    assert run_fresh_python(code).strip() == "OK"

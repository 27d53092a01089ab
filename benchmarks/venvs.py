"""One virtual environment per system, built from the pinned files in benchmarks/requirements/.

Each system gets its own environment so that its installed size is its own and no system's pins
can move another's. An environment is rebuilt only when its requirement file changes (a stamp
records the file's hash); lcm-run's copy of this repository is reinstalled on every run, since the
code under test changes far more often than its pins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REQUIREMENTS_DIR = Path(__file__).resolve().parent / "requirements"
REPO_ROOT = Path(__file__).resolve().parent.parent
STAMP = "benchmark-requirements.sha256"


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    requirements: str  # file name in benchmarks/requirements/
    install_repo: bool = False  # pip install the repository itself, without extras

    @property
    def requirements_path(self) -> Path:
        return REQUIREMENTS_DIR / self.requirements


ENVIRONMENTS: dict[str, EnvironmentSpec] = {
    spec.name: spec
    for spec in (
        EnvironmentSpec("lcm-runtime", "lcm-runtime.txt", install_repo=True),
        EnvironmentSpec("openvino-genai", "openvino-genai.txt"),
        EnvironmentSpec("optimum-intel", "optimum-intel.txt"),
        EnvironmentSpec("diffusers-torch", "diffusers-torch.txt"),
        EnvironmentSpec("harness", "harness.txt"),
    )
}


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _requirements_hash(spec: EnvironmentSpec) -> str:
    return hashlib.sha256(spec.requirements_path.read_bytes()).hexdigest()


def _base_python() -> str:
    # A venv made from inside another venv must start from the real interpreter, not the venv's.
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_environment(spec: EnvironmentSpec, venvs_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The environment's python, creating or refreshing the environment as needed."""
    venv = venvs_dir / spec.name
    stamp = venv / STAMP
    wanted = _requirements_hash(spec)
    python = venv_python(venv)
    if not (python.exists() and stamp.exists() and stamp.read_text().strip() == wanted):
        log(f"creating environment {spec.name} from {spec.requirements_path.name} (pip install, a few minutes)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
        _pip(python, ["install", "-r", str(spec.requirements_path)], venv)
        stamp.write_text(wanted + "\n")
    if spec.install_repo:
        # --no-deps: the runtime's dependencies are the pinned ones above; extras are never installed.
        _pip(python, ["install", "--no-deps", "--force-reinstall", str(REPO_ROOT)], venv)
        _pip(python, ["check"], venv)  # a dependency the runtime gained but the pins lack fails here
    return python


def _pip(python: Path, args: list[str], venv: Path) -> None:
    log_path = venv / "pip.log"
    with open(log_path, "a", encoding="utf-8") as log_file:
        completed = subprocess.run([str(python), "-m", "pip", *args], stdout=log_file, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RuntimeError(f"pip {' '.join(args)} failed in {venv}:\n" + "\n".join(tail))


def installed_size(venv: Path) -> int:
    """Bytes on disk of everything in the environment (symlinks counted as links, not targets)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(venv):
        for name in filenames:
            path = Path(dirpath) / name
            if path.name in (STAMP, "pip.log"):
                continue
            total += path.lstat().st_size
    return total

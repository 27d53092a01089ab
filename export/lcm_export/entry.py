"""Console entry point of `lcm-export`. Imports nothing heavy: without the [export] extra it
prints how to install it, in one line, instead of an ImportError traceback."""

from __future__ import annotations

import sys
from importlib.util import find_spec

EXPORT_MODULES = ("torch", "diffusers", "transformers", "nncf", "openvino_tokenizers", "safetensors")


def missing_export_modules() -> list[str]:
    return [name for name in EXPORT_MODULES if find_spec(name) is None]


def main() -> None:
    missing = missing_export_modules()
    if missing:
        print(
            f"error: lcm-export needs the export extra (missing: {', '.join(missing)}); "
            "install it with: pip install 'lcm-openvino[export]'",
            file=sys.stderr,
        )
        sys.exit(1)
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()

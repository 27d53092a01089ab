"""A results file's layout version, and reading and writing one.

``schema`` 2 (the current one) guarantees what the report reads without guessing:

- every run has ``height``, ``width``, ``batch`` and ``timed_runs``; every ok run has
  ``deviation_from_f32`` (None when there is no comparable reference image);
- every bundle in ``model.bundles`` has its ``token_downsampling`` factor, and ``flops``, when
  counted, has a UNet step for every factor its bundles use (``unet_step_token_downsampling_<factor>``);
- every cold start has the ``reference`` measurement it is compared with and ``first_png_runs``;
- the INT8-UNet bundle is ``bundle-fast`` (schema 1 files also called it ``bundle-int8``).

Schema 1 files, which were written while these fields were being added, are brought to schema 2
once by ``python -m benchmarks.convert_results``; the report refuses them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_SCHEMA = 2
CONVERTER = "python -m benchmarks.convert_results"


def read_results(path: Path) -> dict[str, Any]:
    """A results file of the current schema, or SystemExit with one line saying what to do."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SystemExit(f"{path}: not a readable results file ({reason})") from None
    schema = results.get("schema") if isinstance(results, dict) else None
    if isinstance(schema, int) and schema > RESULTS_SCHEMA:
        raise SystemExit(f"{path}: results schema {schema} is newer than this report's {RESULTS_SCHEMA}: update it")
    if schema != RESULTS_SCHEMA:
        raise SystemExit(
            f"{path}: results schema {schema}, older than the report's {RESULTS_SCHEMA}: "
            f"convert it once with `{CONVERTER} {path}`"
        )
    return results


def write_results(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")

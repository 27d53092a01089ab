"""OpenVINO's runtime, imported without its model-conversion API.

``import openvino`` also imports ``openvino.tools.ovc`` for ``openvino.convert_model``, and with it
OpenVINO's telemetry package, urllib and http.client: about 0.1 s and 10 MB of every start, for a
function the runtime never calls. OpenVINO's own ``__init__`` treats that import as optional, so it is
held back while openvino loads; ``openvino.convert_model`` stays available and is imported on first use.
"""

from __future__ import annotations

import sys
from typing import Any

_CONVERSION_API = "openvino.tools.ovc"


def _import_openvino() -> Any:
    held_back = "openvino" not in sys.modules and _CONVERSION_API not in sys.modules
    if held_back:
        # An ImportError for openvino's __init__, which skips it. None in sys.modules is the import
        # system's documented "not importable" marker; typeshed types the values as modules only.
        sys.modules[_CONVERSION_API] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if held_back and sys.modules.get(_CONVERSION_API, "") is None:
            del sys.modules[_CONVERSION_API]
    if held_back and "convert_model" not in vars(openvino):
        openvino.__getattr__ = _conversion_api_on_first_use
    return openvino


def _conversion_api_on_first_use(name: str) -> Any:
    if name != "convert_model":
        raise AttributeError(f"module 'openvino' has no attribute {name!r}")
    from openvino.tools.ovc import convert_model

    ov.convert_model = convert_model
    return convert_model


ov = _import_openvino()

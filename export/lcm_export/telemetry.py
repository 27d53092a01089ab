"""An export sends nothing over the network but the hub downloads it was asked for.

OpenVINO's model conversion (``openvino.tools.ovc``) and NNCF report usage events to Google Analytics
through the ``openvino_telemetry`` package unless the user has opted out, and on Linux each event
forks the exporting process to send it: 18 forks for one conversion and one weight compression. A
tiny export took 15.7 s with them against 11.2 s without (medians of 3 alternating runs). Worse, the
fork happens on a sender thread while other threads hold locks, so its child can hang in
``getaddrinfo``; and since ``lcm-export`` handles SIGTERM (to clean up its staging folder), the
sender's SIGTERM does not end that child, and the export never exits (seen in a parallel test run).

Both libraries run without the package (they fall back to stubs that send nothing), so the export
makes it unimportable for its process. That only works before either library has imported it:
``import openvino`` does, through ``openvino.tools.ovc``, so this runs when ``lcm_export`` is
imported, and the runtime's ``openvino_runtime`` holds ovc back until a conversion needs it.
"""

from __future__ import annotations

import sys

TELEMETRY_PACKAGE = "openvino_telemetry"


def keep_openvino_telemetry_off() -> bool:
    """Make OpenVINO's telemetry package unimportable in this process, so that OpenVINO's conversion
    API and NNCF use their no-op stubs. False if it was imported already (it then stays in use)."""
    if TELEMETRY_PACKAGE in sys.modules:
        return sys.modules[TELEMETRY_PACKAGE] is None
    # None in sys.modules is the import system's documented "not importable" marker (an ImportError,
    # which both libraries catch); typeshed types the values as modules only.
    sys.modules[TELEMETRY_PACKAGE] = None  # type: ignore[assignment]
    return True

"""`lcm-run serve`: the OpenAI images API, AUTOMATIC1111's /sdapi/v1 and a web page over one loaded
bundle (extra ``[serve]``: FastAPI, uvicorn, python-multipart, prometheus-client)."""

from __future__ import annotations

INSTALL_HINT = "lcm-run serve needs the [serve] extra: pip install 'lcm-openvino[serve]'"

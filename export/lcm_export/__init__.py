"""lcm_export: turn a diffusers LCM pipeline into a verified OpenVINO bundle (needs the [export] extra)."""

from .telemetry import keep_openvino_telemetry_off

keep_openvino_telemetry_off()

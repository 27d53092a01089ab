"""lcm_export: turn a diffusers LCM pipeline into a verified OpenVINO bundle (needs the [export] extra)."""

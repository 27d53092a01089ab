"""Facts about the machine that decide what the numbers mean."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

FLAGS_THAT_MATTER = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def _cpuinfo() -> dict[str, str]:
    facts: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                facts.setdefault(key.strip(), value.strip())  # the first processor's entry
    except OSError:
        pass
    return facts


def machine_facts() -> dict[str, Any]:
    # Here, not at the top: the report (harness environment, no lcm_runtime) names machines by machine_slug.
    from lcm_runtime.meminfo import meminfo_bytes

    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores_per_socket": int(cpu["cpu cores"]) if cpu.get("cpu cores", "").isdigit() else None,
        "flags": {flag: flag in flags for flag in FLAGS_THAT_MATTER},
        "memory_bytes": meminfo_bytes("MemTotal"),
        "kernel": platform.release(),
        "hypervisor": "hypervisor" in flags,
    }


def machine_slug(facts: dict[str, Any]) -> str:
    """A short file-name-safe name for results/<machine>-<date>.json."""
    model = re.sub(r"\((r|tm)\)|cpu|processor|@.*", "", facts["cpu_model"].lower())
    model = re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "cpu"
    accelerator = "amx" if facts["flags"].get("amx_bf16") else "avx512" if facts["flags"].get("avx512f") else "avx2"
    return f"{model}-{accelerator}-{facts['usable_cpus']}cpu"

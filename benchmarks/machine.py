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
        # A hypervisor may show every AMD EPYC as plain "AMD EPYC": family and model tell the generation.
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_family": int(cpu["cpu family"]) if cpu.get("cpu family", "").isdigit() else None,
        "cpu_model_number": int(cpu["model"]) if cpu.get("model", "").isdigit() else None,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores_per_socket": int(cpu["cpu cores"]) if cpu.get("cpu cores", "").isdigit() else None,
        "flags": {flag: flag in flags for flag in FLAGS_THAT_MATTER},
        "memory_bytes": meminfo_bytes("MemTotal"),
        "kernel": platform.release(),
        "hypervisor": "hypervisor" in flags,
    }


def amd_generation(facts: dict[str, Any]) -> str | None:
    """The generation ("Zen 4", "Zen 5", ...) of an AMD CPU, from its family (or, in results recorded before the family
    was, from AVX-VNNI, which Zen 5 has and Zen 4 lacks); None for other vendors or when unknown."""
    if facts.get("cpu_vendor", "AuthenticAMD" if facts["cpu_model"].startswith("AMD") else None) != "AuthenticAMD":
        return None
    family, flags = facts.get("cpu_family"), facts["flags"]
    if family is None and flags.get("avx512f") and "avx_vnni" in flags:
        family = 26 if flags["avx_vnni"] else 25
    if family == 25:
        return "Zen 4" if flags.get("avx512f") else "Zen 3"
    return {23: "Zen 2", 26: "Zen 5"}.get(family) if family is not None else None


def cpu_name(facts: dict[str, Any]) -> str:
    """The CPU's model name, with its generation where the name leaves it out ("AMD EPYC Zen 4")."""
    generation = amd_generation(facts)
    name = str(facts["cpu_model"])
    return f"{name} {generation}" if generation and generation not in name else name


def machine_slug(facts: dict[str, Any]) -> str:
    """A short file-name-safe name for results/<machine>-<date>.json."""
    # "zen5", as AMD writes it in part names
    model = re.sub(r"\((r|tm)\)|cpu|processor|@.*|(?<=zen) ", "", cpu_name(facts).lower())
    model = re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "cpu"
    accelerator = "amx" if facts["flags"].get("amx_bf16") else "avx512" if facts["flags"].get("avx512f") else "avx2"
    return f"{model}-{accelerator}-{facts['usable_cpus']}cpu"

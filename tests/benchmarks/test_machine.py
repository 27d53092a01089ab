"""Machines are named by what they are: a hypervisor that shows every AMD EPYC as "AMD EPYC" must not
make a Zen 4 and a Zen 5 one kind of CPU in the README's table."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest


def epyc(**facts: Any) -> dict[str, Any]:
    flags = {"avx512f": True, "avx512_bf16": True, "amx_bf16": False} | facts.pop("flags", {})
    return {"cpu_model": "AMD EPYC", "usable_cpus": 2, "flags": flags} | facts


@pytest.mark.parametrize(
    ("facts", "generation"),
    [
        (epyc(cpu_vendor="AuthenticAMD", cpu_family=26, cpu_model_number=2), "Zen 5"),
        (epyc(cpu_vendor="AuthenticAMD", cpu_family=25, cpu_model_number=17), "Zen 4"),
        (epyc(cpu_vendor="AuthenticAMD", cpu_family=25, flags={"avx512f": False}), "Zen 3"),
        # Results recorded before the family was: AVX-VNNI (VEX) came with Zen 5.
        (epyc(flags={"avx_vnni": True}), "Zen 5"),
        (epyc(flags={"avx_vnni": False}), "Zen 4"),
        (epyc(), None),  # older still: no AVX-VNNI entry, nothing to tell them apart by
        (epyc(cpu_vendor="AuthenticAMD", cpu_family=99), None),
        ({"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_vendor": "GenuineIntel", "cpu_family": 6, "flags": {}}, None),
    ],
)
def test_amd_generation(benchmarks_package: ModuleType, facts: dict[str, Any], generation: str | None) -> None:
    from benchmarks.machine import amd_generation

    assert amd_generation(facts) == generation


def test_zen_generations_are_kinds_of_their_own(benchmarks_package: ModuleType) -> None:
    from benchmarks.machine import machine_slug
    from benchmarks.readme_block import cpu_text

    zen4, zen5 = epyc(cpu_vendor="AuthenticAMD", cpu_family=25), epyc(flags={"avx_vnni": True})
    assert machine_slug(zen4) == "amd-epyc-zen4-avx512-2cpu"
    assert machine_slug(zen5) == "amd-epyc-zen5-avx512-2cpu"
    assert cpu_text(zen4) == "AMD EPYC Zen 4 (avx512_bf16, no AMX, 2 CPUs)"
    xeon = {"cpu_model": "Intel(R) Xeon(R) Processor", "usable_cpus": 2, "flags": {"amx_bf16": True}}
    assert machine_slug(xeon) == "intel-xeon-amx-2cpu"
    assert cpu_text(xeon) == "Intel Xeon (AMX, 2 CPUs)"


def test_machine_facts_read_this_cpu(benchmarks_package: ModuleType) -> None:
    from benchmarks.machine import machine_facts

    facts = machine_facts()
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        family = next((line.split(":")[1].strip() for line in handle if line.startswith("cpu family")), None)
    assert facts["cpu_family"] == (int(family) if family and family.isdigit() else None)
    assert facts["usable_cpus"] >= 1

"""init_ray: a local Ray instance lcm-run starts reports no usage statistics; a cluster it joins, or a
user's own choice, keeps its setting. A stand-in ray module records the environment ray.init sees,
which is what the processes it starts inherit."""

from __future__ import annotations

import os
import sys
import types

import pytest

from lcm_runtime.ray_start import USAGE_STATS_SWITCH, init_ray


@pytest.fixture
def ray_init_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []

    def init(**kwargs: object) -> None:
        calls.append({"kwargs": kwargs, "switch": os.environ.get(USAGE_STATS_SWITCH)})

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=init))
    for name in (USAGE_STATS_SWITCH, "RAY_ADDRESS"):  # unset now, and as before after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return calls


@pytest.mark.parametrize("address", [None, ""])
def test_a_local_instance_starts_with_usage_stats_off(ray_init_calls, address):
    init_ray(address, configure_logging=False)
    assert ray_init_calls == [
        {
            "kwargs": {"address": None, "include_dashboard": False, "log_to_driver": False, "configure_logging": False},
            "switch": "0",
        }
    ]


def test_a_cluster_to_join_keeps_its_own_setting(ray_init_calls, monkeypatch):
    init_ray("ray://head:10001")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    init_ray(None)
    assert [call["switch"] for call in ray_init_calls] == [None, None]
    assert ray_init_calls[0]["kwargs"]["address"] == "ray://head:10001"


def test_the_users_own_switch_wins(ray_init_calls, monkeypatch):
    monkeypatch.setenv(USAGE_STATS_SWITCH, "1")
    init_ray(None)
    assert ray_init_calls[0]["switch"] == "1"

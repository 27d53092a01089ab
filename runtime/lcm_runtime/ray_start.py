"""Joining or starting Ray for `lcm-run batch --ray` and `lcm-run serve --ray` (extra [ray]).

Ray collects usage statistics by default: the minimal modules of its dashboard process, which run
even without the dashboard, post them to usage-stats.ray.io about once an hour. A local instance
that lcm-run starts for itself is lcm-run's, and like the rest of lcm-run it sends nothing; a cluster
someone else started (an address, or $RAY_ADDRESS) keeps the setting its head node was started with.
Ray's own switch, $RAY_USAGE_STATS_ENABLED, wins when the user sets it.
"""

from __future__ import annotations

import os
from typing import Any

USAGE_STATS_SWITCH = "RAY_USAGE_STATS_ENABLED"


def init_ray(address: str | None, **options: Any) -> None:
    """``ray.init`` on the cluster at ``address`` (else $RAY_ADDRESS, else a new local instance, with
    usage statistics off), without the dashboard or the workers' logs in this process's output."""
    import ray

    if not (address or os.environ.get("RAY_ADDRESS")):
        # Read by the processes ray.init starts, which inherit this environment.
        os.environ.setdefault(USAGE_STATS_SWITCH, "0")
    ray.init(address=address or None, include_dashboard=False, log_to_driver=False, **options)

"""The server as a Ray Serve deployment on a local Ray instance (2 CPUs): the OpenAI route through
Ray's HTTP proxy with the official client, two replicas, and one of them killed."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")
from ray import serve
from servers import HOST, free_port

from lcm_runtime.serve.ray_app import build_app

CALL = dict(prompt="a red cube", size="64x64", extra_body={"num_inference_steps": 2, "seed": 11})


@pytest.fixture(scope="module")
def ray_server(tiny_bundle_fp32):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    port = free_port()
    try:
        serve.start(http_options={"host": HOST, "port": port})
        serve.run(build_app(str(tiny_bundle_fp32), replicas=2, cpus_per_replica=1, precision="f32"), route_prefix="/")
        yield f"http://{HOST}:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def pixels(result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))))


def replica_actors() -> list[dict]:
    """The live replica actors, by name (from Ray's GCS: no dashboard needed)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return [actor for actor in named if "SERVE_REPLICA" in actor["name"] and "lcm-openvino" in actor["name"]]


def test_two_replicas_answer_the_openai_route_and_survive_one_being_killed(ray_server, server):
    client = openai.OpenAI(base_url=f"{ray_server}/v1", api_key="local", max_retries=0, timeout=120)
    local = openai.OpenAI(base_url=f"{server.url}/v1", api_key="local", max_retries=0, timeout=120)
    through_ray = pixels(client.images.generate(**CALL))
    np.testing.assert_array_equal(through_ray, pixels(local.images.generate(**CALL)))  # same behaviour
    assert len(replica_actors()) == 2

    victim = replica_actors()[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    for _ in range(4):  # the other replica answers while Ray replaces the killed one
        np.testing.assert_array_equal(pixels(client.images.generate(**CALL)), through_ray)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(replica_actors()) < 2:
        time.sleep(1)
    assert len(replica_actors()) == 2
    assert victim["name"] not in {actor["name"] for actor in replica_actors()}

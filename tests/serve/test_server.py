"""The server's behaviour around the APIs: health, metrics, the API key, body limits, errors as JSON,
load with a small queue, clients that leave, SIGTERM and memory over many requests (all bounded)."""

from __future__ import annotations

import base64
import io
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from servers import free_port, start_server

SMALL = {"prompt": "a red cube", "size": "64x64", "num_inference_steps": 1}


def metric(server, name: str, labels: str = "") -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_until(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached in {timeout} s")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_health_and_metrics(server):
    with server.client() as client:
        assert client.get("/health").json()["status"] == "ok"
        assert client.head("/health").status_code == 200  # what many uptime monitors send
        before = metric(server, "lcm_images_total")
        assert client.post("/v1/images/generations", json={**SMALL, "n": 2}).status_code == 200
        text = client.get("/metrics").text
    assert metric(server, "lcm_images_total") == before + 2
    for name in ("lcm_queue_length", "lcm_step_seconds_bucket", "lcm_request_seconds_bucket", "lcm_errors_total"):
        assert name in text


def test_every_error_answer_is_counted_once(server, guarded_server):
    """lcm_errors_total counts the 400s refused before the engine (body validation, a bad picture) as well
    as the engine's own, each once, and the middlewares' 413 and 401."""
    bad = '{status="400"}'
    before = metric(server, "lcm_errors_total", bad)
    with server.client() as client:
        assert client.post("/v1/images/generations", json={"prompt": "x", "n": 0}).status_code == 400
        assert client.post("/v1/images/edits", data={"prompt": "x"}, files={"image": b"junk"}).status_code == 400
        refused = client.post("/v1/images/generations", json={**SMALL, "negative_prompt": "blurry"})  # by the engine
        assert refused.status_code == 400
    assert metric(server, "lcm_errors_total", bad) == before + 3

    def guarded_errors(status: str) -> float:
        with guarded_server.client() as client:  # /metrics needs the key on this server
            text = client.get("/metrics").text
        found = re.search(rf'^lcm_errors_total{{status="{status}"}} ([0-9.]+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    for status in ("413", "401"):
        before = guarded_errors(status)
        headers = {"Authorization": "Bearer sesame"} if status == "413" else {}
        body = {"prompt": "x" * (2 * 2**20)} if status == "413" else SMALL
        answer = httpx.post(f"{guarded_server.url}/v1/images/generations", json=body, headers=headers, timeout=30)
        assert answer.status_code == int(status)
        assert guarded_errors(status) == before + 1


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": "x", "size": "big"}, 400, "size"),
        ({"prompt": "x", "size": "64x64", "n": 99}, 400, "n"),
        ({"prompt": "x", "size": "4096x4096"}, 400, "size"),
        ({"prompt": "x", "num_inference_steps": 0}, 400, "num_inference_steps"),
        ({"prompt": "x", "guidance_scale": "high"}, 400, "guidance_scale"),
        ({"prompt": "x", "output_format": "gif"}, 400, "output_format"),
        ({"prompt": "x", "size": "64x64", "seed": 2**40}, 400, "seed"),
    ],
)
def test_client_mistakes_are_4xx_in_openais_shape(server, body, status, param):
    with server.client() as client:
        answer = client.post("/v1/images/generations", json=body)
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param and "\n" not in error["message"] and "Traceback" not in answer.text
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    "content, content_type",
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"prompt=x", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_bodies_are_400(server, content, content_type):
    with server.client() as client:
        answer = client.post("/v1/images/generations", content=content, headers={"content-type": content_type})
        assert answer.status_code in (400, 422) and "error" in answer.json()


def test_unreadable_upload_is_400(server):
    with server.client() as client:
        answer = client.post(
            "/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", b"not a picture", "image/png")}
        )
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "image"
        answer = client.post("/v1/images/edits", data={"prompt": "x"})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "image"


def test_unknown_route_is_a_json_404(server):
    with server.client() as client:
        answer = client.get("/v1/nothing/here")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        # No path on the server's disk is ever taken from a request.
        assert client.get("/v1/images/files/..%2F..%2Fetc%2Fpasswd").status_code == 404
        assert client.get("/static/../../../../etc/passwd").status_code == 404


@pytest.fixture(scope="module")
def guarded_server(tiny_bundle_fp32, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-guarded") / "server.log"
    running = start_server(
        tiny_bundle_fp32, log, "--max-body", "1", "--cors-origin", "http://example.test", api_key="sesame"
    )
    yield running
    running.stop()


def test_api_key_is_required_everywhere_but_health(guarded_server):
    url = guarded_server.url
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    for path in ("/v1/models", "/metrics", "/sdapi/v1/options"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 401
        wrong = httpx.get(f"{url}{path}", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
    answer = httpx.post(f"{url}/v1/images/generations", json=SMALL, timeout=30)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    with guarded_server.client() as client:
        assert client.get("/v1/models").status_code == 200
        assert client.post("/v1/images/generations", json=SMALL).status_code == 200


def test_a_body_over_max_body_is_413(guarded_server):
    with guarded_server.client() as client:
        big = {"prompt": "x" * (2 * 2**20)}
        answer = client.post("/v1/images/generations", json=big)
        assert answer.status_code == 413 and answer.headers["x-should-retry"] == "false"
        files = {"image": ("a.png", b"\0" * (2 * 2**20), "image/png")}
        assert client.post("/v1/images/edits", data={"prompt": "x"}, files=files).status_code == 413
        assert client.get("/health").status_code == 200


def test_cors_only_for_the_given_origin(guarded_server, server):
    preflight = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
    answer = httpx.options(f"{guarded_server.url}/v1/images/generations", headers=preflight, timeout=10)
    assert answer.headers.get("access-control-allow-origin") == "http://example.test"
    other = httpx.get(f"{server.url}/health", headers={"Origin": "http://example.test"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers


@pytest.fixture
def small_queue_server(tiny_bundle_fp32, tmp_path):
    running = start_server(tiny_bundle_fp32, tmp_path / "server.log", "--max-queue", "3")
    yield running
    running.stop()


def test_sixteen_clients_each_get_an_image_or_a_429_and_images_match_a_sequential_run(small_queue_server):
    # 16 clients x 2 requests with distinct seeds, 12 steps each, against a queue of 3.
    seeds = list(range(100, 132))

    def ask(seed: int) -> tuple[int, int, bytes | None]:
        with small_queue_server.client() as client:
            body = {**SMALL, "num_inference_steps": 12, "seed": seed}
            answer = client.post("/v1/images/generations", json=body)
            if answer.status_code == 429:
                assert answer.headers["retry-after"]
                return seed, 429, None
            assert answer.status_code == 200, answer.text
            return seed, 200, base64.b64decode(answer.json()["data"][0]["b64_json"])

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, seeds))
    statuses = [status for _, status, _ in answers]
    assert len(answers) == len(seeds) and set(statuses) <= {200, 429}
    assert 429 in statuses and 200 in statuses
    served = {seed: png for seed, status, png in answers if status == 200}
    assert metric(small_queue_server, "lcm_images_total") == len(served)  # none lost, none made twice
    assert metric(small_queue_server, "lcm_requests_total", '{api="openai",status="500"}') == 0
    for seed in list(served)[:4]:
        _, status, png = ask(seed)
        assert status == 200
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(png))), np.asarray(Image.open(io.BytesIO(served[seed])))
        )


LONG = {"prompt": "a red cube", "size": "256x256", "num_inference_steps": 50}


def test_a_client_that_leaves_has_its_queued_and_running_jobs_dropped(small_queue_server):
    server = small_queue_server
    left: list[httpx.TimeoutException] = []

    def leave_mid_image() -> None:
        try:
            httpx.post(f"{server.url}/v1/images/generations", json=LONG, timeout=0.8)
        except httpx.TimeoutException as error:  # the client's own timeout: it hangs up mid-image
            left.append(error)

    running = threading.Thread(target=leave_mid_image, daemon=True)
    running.start()
    wait_until(lambda: metric(server, "lcm_running") == 1, what="the first job running")
    with pytest.raises(httpx.TimeoutException):  # queued behind it, then gone
        httpx.post(f"{server.url}/v1/images/generations", json=SMALL, timeout=0.4)
    running.join(timeout=30)
    assert left, "the first client had its answer before it could leave"
    wait_until(lambda: metric(server, "lcm_running") == 0 and metric(server, "lcm_queue_length") == 0, 30, "idle")
    assert metric(server, "lcm_images_total") == 0  # the running job stopped at a step, the queued one dropped
    assert metric(server, "lcm_requests_total", '{api="openai",status="499"}') == 2
    assert httpx.post(f"{server.url}/v1/images/generations", json=SMALL, timeout=30).status_code == 200


def test_sigterm_finishes_the_running_image_refuses_the_queue_and_exits_0(small_queue_server):
    server = small_queue_server
    answers: dict[str, httpx.Response] = {}

    def ask(name: str, body: dict) -> None:
        answers[name] = httpx.post(f"{server.url}/v1/images/generations", json=body, timeout=120)

    first = threading.Thread(target=ask, args=("running", LONG))
    first.start()
    wait_until(lambda: metric(server, "lcm_running") == 1, what="the first job running")
    second = threading.Thread(target=ask, args=("queued", SMALL))
    second.start()
    wait_until(lambda: metric(server, "lcm_queue_length") == 1, what="the second job queued")
    assert server.stop(signal.SIGTERM, timeout=120) == 0
    first.join(timeout=30)
    second.join(timeout=30)
    assert answers["running"].status_code == 200 and answers["running"].json()["data"][0]["b64_json"]
    assert answers["queued"].status_code == 503 and answers["queued"].headers["retry-after"]


def test_memory_after_200_requests_is_within_5_percent_of_after_10(small_queue_server):
    server = small_queue_server
    with server.client() as client:
        for index in range(200):
            if index == 10:
                after_10 = rss_kib(server.process.pid)
            answer = client.post("/v1/images/generations", json={**SMALL, "seed": index})
            assert answer.status_code == 200
    after_200 = rss_kib(server.process.pid)
    assert after_200 <= after_10 * 1.05, (after_10, after_200)


def test_a_request_that_waits_longer_than_timeout_gets_503_and_its_job_is_dropped(tiny_bundle_fp32, tmp_path):
    server = start_server(tiny_bundle_fp32, tmp_path / "server.log", "--timeout", "1")
    try:
        long = {"prompt": "a red cube", "size": "512x512", "num_inference_steps": 50}
        answer = httpx.post(f"{server.url}/v1/images/generations", json=long, timeout=60)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "timeout"
        assert answer.headers["retry-after"]
        wait_until(lambda: metric(server, "lcm_running") == 0, 30, "the timed-out job stopped")
        assert metric(server, "lcm_images_total") == 0
        assert httpx.post(f"{server.url}/v1/images/generations", json=SMALL, timeout=30).status_code == 200
    finally:
        server.stop()


def test_the_api_key_can_come_from_lcm_api_key(tiny_bundle_fp32, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from servers import HOST, free_port

    port = free_port()
    env = {**os.environ, "LCM_API_KEY": "from-env"}
    command = [sys.executable, "-m", "lcm_runtime.cli", "serve", "--model", str(tiny_bundle_fp32)]
    process = subprocess.Popen([*command, "--host", HOST, "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://{HOST}:{port}"
        wait_until(lambda: _answers(f"{url}/health"), 120, "healthy")
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
        headers = {"Authorization": "Bearer from-env"}
        assert httpx.get(f"{url}/v1/models", headers=headers, timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_max_queue_0_runs_one_request_at_a_time_and_queues_none(tiny_bundle_fp32, tmp_path):
    """--max-queue counts requests that wait: 0 used to answer every request 429, an idle server's too."""
    server = start_server(tiny_bundle_fp32, tmp_path / "server.log", "--max-queue", "0")
    try:
        assert httpx.post(f"{server.url}/v1/images/generations", json=SMALL, timeout=30).status_code == 200
        statuses: list[int] = []

        def ask() -> None:  # seconds of work, so the second request surely comes while it runs
            longer = {**LONG, "size": "384x384"}
            statuses.append(httpx.post(f"{server.url}/v1/images/generations", json=longer, timeout=120).status_code)

        first = threading.Thread(target=ask)
        first.start()
        wait_until(lambda: metric(server, "lcm_running") == 1, what="the first job running")
        refused = httpx.post(f"{server.url}/v1/images/generations", json=SMALL, timeout=30)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        first.join(timeout=120)
        assert statuses == [200]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--precision", "f64"], "precision must be one of auto, f32, bf16, f16, got 'f64'"),
        (["--device", "TPU"], "OpenVINO has no device 'TPU' on this machine"),
        (["--host", "999.1.1.1"], "--host '999.1.1.1' is not an address of this machine"),
        (["--port", "TAKEN"], "is in use by another program; choose another --port"),
        (["--max-queue", "-1"], "--max-queue must be 0 or more, got -1"),
        (["--max-side", "10"], "--max-side must be at least 64, got 10"),
        (["--timeout", "0"], "--timeout must be above 0 seconds, got 0"),
    ],
)
def test_a_server_that_cannot_serve_is_refused_in_one_line_before_it_starts(tiny_bundle_fp32, options, message):
    """A taken port aborted the process (SIGABRT, uvicorn exiting while OpenVINO compiled on another thread);
    a precision or device lcm-run refuses gave a server that answered every request 503."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        options = [port if option == "TAKEN" else option for option in options]
        command = [sys.executable, "-m", "lcm_runtime.cli", "serve", "--model", str(tiny_bundle_fp32)]
        if "--port" not in options:
            options = [*options, "--port", str(free_port())]
        result = subprocess.run(
            [*command, *options],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "LCM_CACHE_DIR": "off"},
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr

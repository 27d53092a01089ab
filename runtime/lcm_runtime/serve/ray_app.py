"""The server as a Ray Serve deployment (extra ``[ray]``): the same FastAPI app, routes and behaviour,
in N replicas behind Ray's HTTP proxy, each replica with its own engine (bundle loaded once per replica).

    lcm-run serve --model BUNDLE --ray --replicas 2            # a local Ray instance, or $RAY_ADDRESS
    serve run lcm_runtime.serve.ray_app:app_builder model=BUNDLE replicas=2   # Ray's own CLI, KubeRay

Each replica asks Ray for ``cpus_per_replica`` CPUs and tells OpenVINO to use that many threads, so
replicas on one node do not fight over the cores.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ray import serve
from ray.serve.deployment import Application

from ..ray_start import init_ray
from .app import create_app
from .engine import Engine
from .state import Settings

READY_TIMEOUT = 900.0  # seconds a replica may take to load and compile before Ray counts it failed


@serve.ingress()
class LCMReplica:
    """One replica: an engine on its own worker thread and the app over it."""

    def __init__(self, engine_options: dict[str, Any], settings: dict[str, Any]) -> None:
        self.engine = Engine(**engine_options)
        self.engine.start()
        if not self.engine.ready.wait(READY_TIMEOUT) or self.engine.load_error:
            raise RuntimeError(f"the model did not load: {self.engine.load_error or 'timed out'}")
        settings["cors_origins"] = tuple(settings.get("cors_origins", ()))
        self.asgi_app = create_app(self.engine, Settings(**settings))

    def __serve_build_asgi_app__(self) -> Any:
        return self.asgi_app

    def check_health(self) -> None:
        """Ray Serve restarts a replica whose engine worker died."""
        if not self.engine.alive():
            raise RuntimeError("the engine's worker thread is gone")


def build_app(
    model: str,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    settings: Settings | None = None,
    **engine_options: Any,
) -> Application:
    """The Ray Serve application: ``serve.run(build_app("BUNDLE", replicas=2))``."""
    threads = max(1, int(cpus_per_replica))
    deployment = serve.deployment(
        name="lcm-openvino",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica},
        # One generation at a time per replica, as the engine runs them; the rest wait in its queue.
        max_ongoing_requests=max(2, (engine_options.get("max_queue") or 16) + 1),
        health_check_period_s=10,
    )(LCMReplica)
    options = {"bundle": model, "threads": threads, **engine_options}
    return deployment.bind(options, asdict(settings or Settings()))


def app_builder(args: dict[str, str]) -> Application:
    """For `serve run lcm_runtime.serve.ray_app:app_builder model=BUNDLE replicas=N cpus_per_replica=C`
    and a KubeRay RayService's ``import_path``."""
    known = {"model", "replicas", "cpus_per_replica", "precision", "device", "api_key", "max_queue"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown arguments {unknown}; these are known: {sorted(known)}")
    engine_options: dict[str, Any] = {}
    for name in ("precision", "device"):
        if name in args:
            engine_options[name] = args[name]
    if "max_queue" in args:
        engine_options["max_queue"] = int(args["max_queue"])
    return build_app(
        args["model"],
        replicas=int(args.get("replicas", 1)),
        cpus_per_replica=float(args.get("cpus_per_replica", 1)),
        settings=Settings(api_key=args.get("api_key") or None),
        **engine_options,
    )


def run(
    model: str,
    settings: Settings,
    host: str,
    port: int,
    replicas: int,
    cpus_per_replica: float,
    address: str | None = None,
    **engine_options: Any,
) -> None:
    """`lcm-run serve --ray`: deploy on the Ray cluster at ``address`` ($RAY_ADDRESS, else a local
    instance), serve until SIGTERM or Ctrl-C, then take the application down and exit."""
    import signal
    import threading

    import ray

    stop = threading.Event()
    init_ray(address)
    # After ray.init: Ray installs its own handlers, which abort the process on SIGTERM.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(model, replicas, cpus_per_replica, settings, **engine_options), route_prefix="/")
        print(f"lcm-run serve: {replicas} replicas on Ray, http://{host}:{port}/", flush=True)
        stop.wait()
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()

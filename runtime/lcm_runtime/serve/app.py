"""The FastAPI application: both API families, /health, /metrics, the web page, and what guards them
(API key, body size, CORS, errors as JSON: never a traceback, never a 500 for a client's mistake)."""

from __future__ import annotations

import hmac
import json
import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from . import a1111_api, openai_api
from .engine import Engine
from .http import ApiError, openai_error_body
from .state import ServerState, Settings

log = logging.getLogger("lcm_runtime.serve")
OPEN_PATHS = ("/health",)  # no API key needed; nor for the page's own files (/, /static/): they hold no data


def is_a1111(path: str) -> bool:
    return path.startswith("/sdapi/")


def error_response(request_path: str, error: ApiError, app: Any = None) -> JSONResponse:
    """The error in its API family's shape; counted in ``app``'s lcm_errors_total unless already counted."""
    server = getattr(getattr(app, "state", None), "server", None)
    if server is not None and not error.counted:
        server.metrics.errors.labels(status=str(error.status)).inc()
    if is_a1111(request_path):
        body: dict[str, Any] = {"error": error.type, "detail": error.message, "body": "", "errors": error.message}
    else:
        body = openai_error_body(error)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length or as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = ApiError(
            413,
            f"the request body is over {self.limit // 2**20} MB (--max-body); send a smaller image",
            code="body_too_large",
            headers={"x-should-retry": "false"},
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await error_response(scope["path"], too_large, scope.get("app"))(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise too_large
            return message

        await self.app(scope, limited, send)


class ApiKey:
    """``Authorization: Bearer KEY`` on every API route (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path == "/" or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        if not hmac.compare_digest(given, self.key):
            error = ApiError(
                401,
                "missing or wrong API key: send the header Authorization: Bearer KEY",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer", "x-should-retry": "false"},
            )
            await error_response(path, error, scope.get("app"))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="lcm-openvino",
        version=__version__,
        description="Latent Consistency Model images on the CPU: the OpenAI images API and AUTOMATIC1111's /sdapi/v1.",
    )
    app.state.server = ServerState(engine, settings)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(request.url.path, error, request.app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {}
        location = [str(part) for part in first.get("loc", ()) if part != "body" and not isinstance(part, int)]
        param = ".".join(location) or None
        message = f"{param + ': ' if param else ''}{first.get('msg', 'invalid request')}".replace("\n", " ")
        if first.get("type") == "json_invalid":
            param, message = None, "the body is not valid JSON; send a JSON object"
        status = 422 if is_a1111(request.url.path) else 400
        return error_response(request.url.path, ApiError(status, message, param=param), request.app)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail) if error.detail else "error"
        answer = ApiError(error.status_code, message, code="not_found" if error.status_code == 404 else None)
        return error_response(request.url.path, answer, request.app)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path, exc_info=error)
        failure = ApiError(500, "the server failed unexpectedly; see its log", type="server_error")
        return error_response(request.url.path, failure, request.app)

    @app.api_route("/health", methods=["GET", "HEAD"], tags=["server"])  # HEAD: what many uptime monitors send
    async def health(request: Request) -> JSONResponse:
        """200 once the models are compiled and the server takes requests; 503 before (or if loading failed)."""
        state: ServerState = request.app.state.server
        if not state.engine.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.engine.load_error:
            return JSONResponse({"status": "failed", "error": state.engine.load_error}, status_code=503)
        return JSONResponse({"status": "ok", "model": state.engine.model_name, "queue": state.engine.queued()})

    @app.get("/metrics", tags=["server"])
    async def metrics(request: Request) -> Response:
        """Prometheus text: queue length, images, errors, step and request latency histograms."""
        state: ServerState = request.app.state.server
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    page = resources.files("lcm_runtime.serve") / "static"

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        html = (page / "index.html").read_text(encoding="utf-8")
        config = {"model": engine.model_name, "defaults": engine.defaults(), "apiKeyRequired": bool(settings.api_key)}
        # "<" escaped: a bundle name must not be able to close the page's <script>.
        return HTMLResponse(html.replace("/*LCM_CONFIG*/{}", json.dumps(config).replace("<", "\\u003c")))

    app.mount("/static", StaticFiles(directory=str(page)), name="static")
    app.include_router(openai_api.router)
    app.include_router(a1111_api.router)

    # Outermost last: CORS (if asked), then the key, then the body limit.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app

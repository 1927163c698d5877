"""``qrec serve``: an HTTP service of one artifact (FastAPI on uvicorn), from the file alone.

    POST /recommend   {"user_ids": [...], "k": 10, "exclude": [...], "filter_seen": true}
                      -> {"results": [{"user_id": u, "items": [...], "scores": [...]}, ...]}
    GET  /similar/{item_id}?k=10   -> {"item_id": i, "items": [...], "scores": [...]}
    GET  /health      -> {"status": "ok"}
    GET  /metadata    -> the manifest (config, sizes, tables), file size, batching counters

Answers equal ``Model.recommend`` / ``similar_items`` (ids raw, seen items filtered, ties to the lower item
index); items a user cannot be recommended (fewer than ``k`` left) are left out rather than sent as -inf.
Concurrent ``/recommend`` requests are scored together (``serving.batcher``); a request scored alone equals
``Model.recommend`` of its users bit for bit, one batched with others may differ in the last float32 bit
of its scores where the format scores by GEMM (BLAS rounds by batch shape; popcount and table scans do not). Bad input is a 4xx JSON
``{"error": ...}``: malformed JSON 400, a wrong field or type 422, ``k`` out of range 400, unknown users 404
(listing them), a body over ``MAX_BODY`` bytes or more than ``MAX_USERS`` users 413. Unknown ids in
``exclude`` are ignored (the model cannot recommend them anyway).

The hot path is lean (BENCHMARKS.md, "Serving over HTTP"): ``POST /recommend`` is answered by ``Front``, a plain
ASGI layer in front of FastAPI whose middleware, routing and dependency machinery it skips (FastAPI's route runs
the same handler and documents it), and ``serve`` runs uvicorn with ``OneWriteProtocol``, which sends a
response's head and body in one write (uvicorn writes them separately: two system calls, and two TCP segments
the client wakes up for).
"""

from __future__ import annotations

import gc
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException

from qrec.errors import QrecError
from qrec.export.vocab import UnknownIdError
from qrec.serving.batcher import MicroBatcher
from qrec.serving.model import Model

MAX_BODY = 1 << 20    # bytes of one request body
MAX_USERS = 1000      # users in one request
MAX_K = 1000
MAX_EXCLUDE = 10_000  # extra excluded items in one request

Id = StrictInt | StrictStr


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: list[Id] = Field(min_length=1)
    k: StrictInt = 10
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_EXCLUDE)
    filter_seen: StrictBool = True


@dataclass
class Job:
    users: np.ndarray    # row indices
    k: int
    filter_seen: bool
    exclude: np.ndarray  # item indices


def run_jobs(model: Model, jobs: list[Job]) -> list[tuple[np.ndarray, np.ndarray]]:
    """All jobs' users in one scoring call at the largest ``k``; each job gets its rows, cut to its ``k``."""
    users = np.concatenate([j.users for j in jobs])
    flags = np.concatenate([np.full(len(j.users), j.filter_seen) for j in jobs])
    exclude = [j.exclude for j in jobs for _ in j.users] if any(len(j.exclude) for j in jobs) else None
    top, scores = model.recommend_index(users, max(j.k for j in jobs), flags, exclude)
    bounds = np.cumsum([0] + [len(j.users) for j in jobs])
    return [(top[a:b, :j.k], scores[a:b, :j.k]) for j, a, b in zip(jobs, bounds[:-1], bounds[1:])]


def error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message} | extra, status_code=status)


def _json(payload) -> bytes:
    """As Starlette's ``JSONResponse`` renders (UTF-8, compact, no NaN)."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def recommend_body(model: Model, batcher: MicroBatcher, max_k: int, body: bytes) -> tuple[int, bytes]:
    """``POST /recommend`` on a request body: ``(status, JSON bytes)``, errors as ``{"error": ...}``."""
    if len(body) > MAX_BODY:
        return 413, _json({"error": f"request body over {MAX_BODY} bytes"})
    try:
        req = RecommendRequest.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return 400, _json({"error": f"malformed JSON: {e}"})
    except ValidationError as e:
        return 422, _json({"error": "invalid request", "detail": json.loads(e.json(include_url=False))})
    if len(req.user_ids) > MAX_USERS:
        return 413, _json({"error": f"at most {MAX_USERS} users per request, got {len(req.user_ids)}"})
    if not 1 <= req.k <= max_k:
        return 400, _json({"error": f"k must be in [1, {max_k}], got {req.k}"})
    try:
        users = model.users.lookup(req.user_ids)
    except UnknownIdError as e:
        return 404, _json({"error": str(e), "unknown": e.ids})
    job = Job(users, req.k, req.filter_seen, model.items.known(req.exclude) if req.exclude else np.zeros(0, np.int64))
    top, scores = await batcher.submit(job)
    return 200, _json({"results": [_ranked(model, {"user_id": uid}, row, val)
                                   for uid, row, val in zip(req.user_ids, top, scores)]})


def create_app(model: Model, max_batch: int = 256, threads: int | None = 1, freeze_gc: bool = False) -> "Front":
    """The ASGI app serving ``model``: ``Front`` over the FastAPI app (``.app``). Scoring runs on one worker
    thread (see ``MicroBatcher``), whose kernels use ``threads`` threads (None: torch's and numba's defaults).
    One by default: on a small or shared machine a parallel kernel waits for its slowest thread at every
    barrier, and a descheduled one stalls each request by milliseconds (BENCHMARKS.md, "Serving over HTTP");
    the event loop needs a core too. At startup one user is scored (the kernels load before the first request)
    and, with ``freeze_gc`` (a server process of its own: ``qrec serve``), everything made so far is moved out of
    the garbage collector's sight (``gc.freeze``): a full collection over the ~200,000 objects of torch, FastAPI
    and the model took 0.1-0.2 s, and the first one came under load, stalling every request behind it."""
    batcher = MicroBatcher(partial(run_jobs, model), size=lambda job: len(job.users), max_batch=max_batch,
                           initializer=None if threads is None else partial(_set_threads, threads))
    max_k = min(MAX_K, model.n_items)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        if model.n_users:
            await batcher.call(model.recommend_index, np.zeros(1, np.int64), min(10, model.n_items))
        if freeze_gc:
            gc.collect()
            gc.freeze()
        yield
        await batcher.stop()

    app = FastAPI(title="qrec", summary=repr(model), lifespan=lifespan)
    app.state.model, app.state.batcher = model, batcher

    recommend = partial(recommend_body, model, batcher, max_k)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # the server answers, whatever happened
        return error(500, f"internal error: {type(exc).__name__}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error(422, "invalid request", detail=json.loads(json.dumps(exc.errors(), default=str)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.post("/recommend", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": RecommendRequest.model_json_schema()}}}})
    async def recommend_route(request: Request):  # answered by ``Front`` first; here for the API's docs
        status, body = await recommend(await request.body())
        return Response(body, status, media_type="application/json")

    @app.get("/similar/{item_id}")
    async def similar(item_id: str, k: int = 10):
        if not 1 <= k <= min(max_k, model.n_items - 1):
            return error(400, f"k must be in [1, {min(max_k, model.n_items - 1)}], got {k}")
        try:
            row = model.items.lookup([item_id])
        except UnknownIdError as e:
            return error(404, str(e), unknown=e.ids)
        try:  # on the scoring thread: the compiled kernels are not to be entered from two threads at once
            top, scores = await batcher.call(model.similar_index, row, k)
        except QrecError as e:  # a model without item embeddings (pop, NeuMF)
            return error(400, str(e))
        return JSONResponse(_ranked(model, {"item_id": model.items.raw(row)[0]}, top[0], scores[0]))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        return model.metadata() | {"batches": batcher.batches, "batched_requests": batcher.jobs,
                                   "limits": {"max_body": MAX_BODY, "max_users": MAX_USERS, "max_k": max_k}}

    return Front(app, limit=MAX_BODY, routes={("POST", "/recommend"): recommend})


class Front:
    """Plain ASGI in front of the FastAPI ``app``: refuses a body over ``limit`` bytes by its Content-Length (413)
    and one without a length (411) before reading it, and answers ``routes`` (``(method, path) -> async
    handler(body) -> (status, JSON bytes)``) itself: FastAPI's middleware stack, routing, dependency solving
    and response classes cost more CPU per request than scoring a small model. Everything else, lifespan
    included, is the app's."""

    def __init__(self, app, limit: int, routes: dict):
        self.app, self.limit, self.routes = app, limit, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is None and headers.get(b"transfer-encoding"):
                return await error(411, "send the body with a Content-Length")(scope, receive, send)
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                return await error(413, f"request body over {self.limit} bytes")(scope, receive, send)
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                return await self._answer(handler, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(handler, receive, send) -> None:
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            status, body = await handler(b"".join(chunks))
        except Exception as e:  # noqa: BLE001 - the server answers, whatever happened
            status, body = 500, _json({"error": f"internal error: {type(e).__name__}"})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def _set_threads(n: int) -> None:
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # per calling thread: this worker's


def _ranked(model: Model, head: dict, items: np.ndarray, scores: np.ndarray) -> dict:
    keep = np.isfinite(scores)
    return head | {"items": model.items.raw(items[keep]), "scores": scores[keep].tolist()}


def uvicorn_config(app, host: str = "127.0.0.1", port: int = 8000, access_log: bool = False, log_level: str = "info"):
    """How ``qrec serve`` runs ``app``: uvicorn with httptools and uvloop where installed, one write per response."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          http=_one_write_protocol() or "auto")


def serve(path, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 256, access_log: bool = False,
          threads: int | None = 1) -> int:
    """Load the artifact and serve it until interrupted (``qrec serve``)."""
    import sys

    import uvicorn

    model = Model.load(path)
    print(f"qrec serve: {model} on http://{host}:{port}", file=sys.stderr)
    app = create_app(model, max_batch, threads, freeze_gc=True)
    uvicorn.Server(uvicorn_config(app, host, port, access_log)).run()
    return 0


class _OneWrite:
    """A transport whose writes within one event-loop step leave as one: uvicorn writes a response's status line
    and headers, then its body, and each write is a system call and, over TCP, a segment the client wakes up
    for. Order is kept; ``close`` sends what is pending first. Everything else is the transport's."""

    def __init__(self, transport, loop):
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name):
        return getattr(self._transport, name)


def _one_write_protocol():
    """uvicorn's httptools protocol over ``_OneWrite`` transports; None without httptools (uvicorn's h11 then)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency of the serve extra
        return None

    class OneWriteProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(_OneWrite(transport, self.loop))

    return OneWriteProtocol

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

The hot path is lean (BENCHMARKS.md, "Serving over HTTP"): ``POST /recommend`` is answered by ``serving.asgi.Front``
before FastAPI's middleware, routing and dependency machinery (FastAPI's route runs the same handler and
documents it), and ``serve`` runs uvicorn with one write per response (``serving.asgi.uvicorn_config``).
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
from qrec.serving.asgi import Front, json_bytes, uvicorn_config
from qrec.serving.batcher import MicroBatcher
from qrec.serving.model import Model
from qrec.threads import set_threads

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


async def recommend_body(model: Model, batcher: MicroBatcher, max_k: int, body: bytes) -> tuple[int, bytes]:
    """``POST /recommend`` on a request body: ``(status, JSON bytes)``, errors as ``{"error": ...}``."""
    if len(body) > MAX_BODY:
        return 413, json_bytes({"error": f"request body over {MAX_BODY} bytes"})
    try:
        req = RecommendRequest.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return 400, json_bytes({"error": f"malformed JSON: {e}"})
    except ValidationError as e:
        return 422, json_bytes({"error": "invalid request", "detail": json.loads(e.json(include_url=False))})
    if len(req.user_ids) > MAX_USERS:
        return 413, json_bytes({"error": f"at most {MAX_USERS} users per request, got {len(req.user_ids)}"})
    if not 1 <= req.k <= max_k:
        return 400, json_bytes({"error": f"k must be in [1, {max_k}], got {req.k}"})
    try:
        users = model.users.lookup(req.user_ids)
    except UnknownIdError as e:
        return 404, json_bytes({"error": str(e), "unknown": e.ids})
    job = Job(users, req.k, req.filter_seen, model.items.known(req.exclude) if req.exclude else np.zeros(0, np.int64))
    top, scores = await batcher.submit(job)
    return 200, json_bytes({"results": [_ranked(model, {"user_id": uid}, row, val)
                                   for uid, row, val in zip(req.user_ids, top, scores)]})


def create_app(model: Model, max_batch: int = 256, threads: int | None = 1, freeze_gc: bool = False) -> Front:
    """The ASGI app serving ``model``: ``Front`` over the FastAPI app (``.app``). Scoring runs on one worker
    thread (see ``MicroBatcher``), whose kernels use ``threads`` threads (None: torch's and numba's defaults).
    One by default: on a small or shared machine a parallel kernel waits for its slowest thread at every
    barrier, and a descheduled one stalls each request by milliseconds (BENCHMARKS.md, "Serving over HTTP");
    the event loop needs a core too. At startup one user is scored (the kernels load before the first request)
    and, with ``freeze_gc`` (a server process of its own: ``qrec serve``), everything made so far is moved out of
    the garbage collector's sight (``gc.freeze``): a full collection over the ~200,000 objects of torch, FastAPI
    and the model took 0.1-0.2 s, and the first one came under load, stalling every request behind it."""
    batcher = MicroBatcher(partial(run_jobs, model), size=lambda job: len(job.users), max_batch=max_batch,
                           initializer=None if threads is None else partial(set_threads, threads))
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


def _ranked(model: Model, head: dict, items: np.ndarray, scores: np.ndarray) -> dict:
    keep = np.isfinite(scores)
    return head | {"items": model.items.raw(items[keep]), "scores": scores[keep].tolist()}


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

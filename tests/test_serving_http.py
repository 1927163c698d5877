"""``qrec serve``: a real server on a free loopback port answers exactly as ``Model.recommend``, batches
concurrent requests, and turns every bad request into a 4xx JSON error without going down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import qrec
from qrec.serving.batcher import MicroBatcher
from qrec.serving.http import MAX_USERS, create_app, uvicorn_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(model, app=None):
    """uvicorn in a thread on a free loopback port, configured as ``qrec serve`` runs it (``app``: else
    ``create_app(model)``); stopped on exit."""
    import uvicorn

    app = create_app(model) if app is None else app
    server = uvicorn.Server(uvicorn_config(app, port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _answer(model, user_ids, k, **options):
    items, scores = model.recommend(user_ids, k=k, **options)
    return [{"user_id": u, "items": row[np.isfinite(val)].tolist(), "scores": val[np.isfinite(val)].tolist()}
            for u, row, val in zip(user_ids, items, scores)]


@pytest.mark.parametrize("name", ["gmf", "sasrec", "binary-gcn"])
def test_answers_equal_model_recommend(served_models, name):
    model = qrec.load(served_models[name][1])
    users = model.user_ids[:7].tolist()
    with running(model) as client:
        assert client.get("/health").json() == {"status": "ok"}
        meta = client.get("/metadata").json()
        assert meta["serving_bits"] == model.manifest["serving_bits"] and "vocab_bits" in meta and "tensors" not in meta
        got = client.post("/recommend", json={"user_ids": users, "k": 5}).json()["results"]
        assert got == _answer(model, users, 5)
        extra = client.post("/recommend", json={"user_ids": users[:2], "k": 3, "exclude": [got[0]["items"][0], 10**9],
                                                "filter_seen": False}).json()["results"]
        assert extra == _answer(model, users[:2], 3, exclude=[got[0]["items"][0]], filter_seen=False)
        similar = client.get(f"/similar/{model.item_ids[2]}", params={"k": 4}).json()
        items, scores = model.similar_items(model.item_ids[2], k=4)
        assert similar == {"item_id": model.item_ids[2].item(), "items": items.tolist(), "scores": scores.tolist()}


def test_string_ids_and_concurrent_requests(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": [f"u{u}" for u in rng.integers(0, 40, 600)], "item": [f"i{i}" for i in rng.integers(0, 50, 600)]})
    model = qrec.fit(df, model="gmf", embedding="mgqe4x16/4@0.25", dim=8, epochs=1, batch_size=64, threads=1)
    users = model.user_ids.tolist()
    with running(model) as client:
        base = str(client.base_url)

        async def burst():
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                return await asyncio.gather(*[c.post("/recommend", json={"user_ids": [u], "k": 3 + n % 4})
                                              for n, u in enumerate(users)])

        replies = asyncio.run(burst())
        assert all(r.status_code == 200 for r in replies)
        for n, (u, r) in enumerate(zip(users, replies)):  # batched with others: BLAS may round the last bit
            got, want = r.json()["results"][0], _answer(model, [u], 3 + n % 4)[0]
            assert got["items"] == want["items"]
            np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
        meta = client.get("/metadata").json()
        assert meta["batched_requests"] == len(users) and meta["batches"] <= len(users)
        assert client.get("/similar/i7").json()["items"][0].startswith("i")


def test_bad_requests_get_4xx_json_and_the_server_stays_up(served_models):
    model = qrec.load(served_models["gmf"][1])
    user = model.user_ids[0].item()
    cases = [
        (b"{not json", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"[1, 2]", 422, "invalid request"),
        (b'{"user_ids": []}', 422, "invalid request"),
        (b'{"user_ids": [1.5]}', 422, "invalid request"),
        (b'{"user_ids": [%d], "k": "10"}' % user, 422, "invalid request"),
        (b'{"user_ids": [%d], "k": 0}' % user, 400, "k must be in"),
        (b'{"user_ids": [%d], "k": 100000}' % user, 400, "k must be in"),
        (b'{"user_ids": [%d], "colour": 1}' % user, 422, "invalid request"),
        (b'{"user_ids": [%d, 123456789, "who"]}' % user, 404, "unknown user id"),
        (b'{"user_ids": [%s]}' % b",".join([b"1"] * (MAX_USERS + 1)), 413, "at most"),
        (b'{"user_ids": [1], "pad": "%s"}' % (b"x" * (2 << 20)), 413, "request body over"),
    ]
    with running(model) as client:
        for body, status, message in cases:
            r = client.post("/recommend", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status and message in r.json()["error"], (body[:40], r.text[:200])
        assert client.post("/recommend", json={"user_ids": [user, 123456789]}).json()["unknown"] == [123456789]
        assert client.get("/similar/123456789").status_code == 404
        assert client.get("/similar/abc").status_code == 404
        assert client.get(f"/similar/{model.item_ids[0]}", params={"k": "many"}).status_code == 422
        assert client.get(f"/similar/{model.item_ids[0]}", params={"k": 0}).status_code == 400
        assert client.get("/nowhere").status_code == 404
        assert client.get("/health").json() == {"status": "ok"}
        assert client.post("/recommend", json={"user_ids": [user], "k": 2}).status_code == 200


def test_the_front_and_the_documented_fastapi_route_answer_alike(served_models):
    """``Front`` answers ``POST /recommend`` before FastAPI; FastAPI's own route (the API docs) runs the same
    handler: equal answers and errors either way, and the request body's schema in the OpenAPI document."""
    model = qrec.load(served_models["gmf"][1])
    user = model.user_ids[0].item()
    bodies = [{"user_ids": [user], "k": 3}, {"user_ids": [user], "k": 0}, {"user_ids": ["nobody"]}, {"users": [1]}]
    answers = []
    for app in (create_app(model), create_app(model).app):  # the front, then FastAPI's route alone
        with running(model, app) as client:
            answers.append([(r.status_code, r.json()) for r in (client.post("/recommend", json=b) for b in bodies)])
            schema = client.get("/openapi.json").json()["paths"]["/recommend"]["post"]["requestBody"]
            assert "user_ids" in schema["content"]["application/json"]["schema"]["properties"]
    assert answers[0] == answers[1] and [status for status, _ in answers[0]] == [200, 400, 404, 422]


def test_similar_on_a_model_without_item_embeddings_is_a_400(seq_file):
    model = qrec.fit(str(seq_file), model="pop", protocol="all", epochs=1)
    with running(model) as client:
        r = client.get(f"/similar/{model.item_ids[0]}")
        assert r.status_code == 400 and "no item embeddings" in r.json()["error"]
        assert client.post("/recommend", json={"user_ids": [model.user_ids[0].item()], "k": 2}).status_code == 200


def test_the_batcher_scores_requests_that_queue_up_in_one_call():
    calls = []

    def run(jobs):
        calls.append(list(jobs))
        return [job * 10 for job in jobs]

    async def main():
        batcher = MicroBatcher(run, size=lambda job: 1, max_batch=8)
        await batcher.start()
        try:
            first = await asyncio.gather(*[batcher.submit(n) for n in range(20)])
            lone = await batcher.submit(99)
        finally:
            await batcher.stop()
        return first, lone

    first, lone = asyncio.run(main())
    assert first == [n * 10 for n in range(20)] and lone == 990
    assert [len(c) for c in calls] == [8, 8, 4, 1]  # all 20 queued before the loop woke: full batches, then the rest


def test_qrec_serve_command_in_a_folder_without_data(served_models, tmp_path):
    """The CLI end to end, in a subprocess: only the artifact in a scratch folder, on a free loopback port."""
    artifact = tmp_path / "model.safetensors"
    artifact.write_bytes(served_models["binary-gcn"][1].read_bytes())
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(qrec.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "qrec.cli", "serve", "model.safetensors", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:] if proc.poll() is not None else "timeout"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        model = qrec.load(artifact)
        users = model.user_ids[:3].tolist()
        got = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user_ids": users, "k": 5}).json()["results"]
        assert got == _answer(model, users, 5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""Load test of ``qrec serve``: throughput and latency percentiles of single-user ``/recommend`` requests.

    PYTHONPATH=src PYTHON=.venv/bin/python QREC_DATA_DIR=../shared/data \
        bash benchmarks/serve_load_artifacts.sh runs/serve-load          # the two trained artifacts, once
    PYTHONPATH=src .venv/bin/python benchmarks/bench_serve_load.py \
        --case ml1m-gmf-mgqe=runs/serve-load/ml1m-gmf-mgqe.safetensors@500 \
        --case gowalla-1bit-gcn=runs/serve-load/gowalla-binary-gcn.safetensors@500 \
        --case synthetic-1M-1bit=synthetic@50 --seconds 10 --repeats 3

The artifacts (``benchmarks/serve_load_artifacts.sh`` has the exact commands): ML-1M GMF with MGQE tables
(``qrec train --dataset ml-1m-seq --min-count 5 --model gmf --embedding mgqe64x256/64@0.1 --epochs 3
--threads 1``, then ``qrec export``; ML-1M as SASRec's preprocessed sequences, since the shared data has no
``ratings.dat``), the Gowalla 1-bit GCN (``qrec train --dataset gowalla --protocol given --model binary-gcn
--epochs 1 --batch-size 8192 --lr 5e-3 --k 20 --eval-every 2 --threads 1``, then ``qrec export``) and a
synthetic 1M-item 1-bit artifact this script builds. Short runs: serving speed does not depend on the weights.

Each case is ``LABEL=ARTIFACT@RATE``; ``synthetic`` builds a 1-bit artifact of ``--synthetic-items`` random
items (4 layers of d = 64 sign bits + scales, ``--synthetic-users`` users with 20 seen items each) first.
For every case the server runs as its own process (``python -m qrec.cli serve``, loopback, a free port) and
this process is the client (asyncio, keep-alive HTTP/1.1 connections), in two modes, each bounded by ``--seconds`` and a request cap:

* ``rate``: open loop, requests sent on a fixed schedule at RATE per second whatever the answers; latency is
  measured from each request's *scheduled* time (no coordinated omission), at most ``--in-flight`` open;
  a request not answered ``GRACE`` seconds after the last one was due counts as failed;
* ``max``: closed loop, ``--concurrency`` clients each sending its next request when the last is answered.

Each request asks ``k = 10`` for one random known user. Reported: the median over ``--repeats`` runs of the
achieved requests per second and of the p50 / p95 / p99 latencies, the failed requests (non-200 or
transport errors) summed over all runs, and the server's users per scoring call (``/metadata``: how much the
micro-batcher merged), and the CPU time the server and the client spent per request (from ``/proc``: what a
request costs whatever else shares the machine). The client shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mdtable import table  # noqa: E402  (benchmarks/mdtable.py: scripts run with this folder on the path)

MAX_REQUESTS = 50_000  # per run, whatever the rate and duration
GRACE = 10.0           # seconds a rate run waits, after its last request is sent, for the open ones


def synthetic_artifact(path: Path, n_items: int, n_users: int, seed: int = 0) -> Path:
    """A 1-bit GCN artifact of random codes (speed does not depend on their values)."""
    import scipy.sparse as sp
    import torch

    from qrec.export.artifact import ServingData, export_model
    from qrec.models.served import CodesServed
    from qrec.retrieval.hamming import BinaryCodes

    g = torch.Generator().manual_seed(seed)
    codes = lambda n: BinaryCodes(torch.randint(-2**63, 2**63 - 1, (n, 4, 1), generator=g),  # noqa: E731
                                  torch.rand(n, 4, generator=g), 64)
    users, items = codes(n_users), codes(n_items)
    bits = sum(t.numel() * t.element_size() * 8 for c in (users, items) for t in c.export().values())
    model = CodesServed(users, items, 64, bits, kind="BinaryGCN")
    rng = np.random.default_rng(seed)
    seen = sp.csr_matrix((np.ones(20 * n_users, np.float32), (np.repeat(np.arange(n_users), 20),
                          rng.integers(0, n_items, 20 * n_users))), shape=(n_users, n_items))
    seen.data[:] = 1
    config = {"model": "binary-gcn", "embedding": "full", "dim": 64, "dataset": "synthetic", "model_options": {}}
    export_model(model, config, path, ServingData(np.arange(n_users), np.arange(n_items), seen))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(artifact: Path, max_batch: int):
    import httpx

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "qrec.cli", "serve", str(artifact), "--port", str(port),
                             "--max-batch", str(max_batch)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else 'timeout'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield url, port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


class Connections:
    """Keep-alive HTTP/1.1 connections to the server, written by hand: httpx spent ~5 ms of CPU per request
    here, more than the server, and the client shares the cores with it. One request at a time per connection;
    a request on a connection the server closed while idle is sent again on a new one, as HTTP clients do."""

    def __init__(self, port: int):
        self.port, self.idle = port, []

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        request = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        if self.idle:  # a kept-alive connection the server may have closed meanwhile (uvicorn: after 5 s idle)
            reader, writer = self.idle.pop()
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):  # nothing was answered: send it again, anew
                writer.close()
                reader, writer, head = await self._fresh(request)
        else:
            reader, writer, head = await self._fresh(request)
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        data = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return status, data

    async def _fresh(self, request: bytes):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(request)
        return reader, writer, await reader.readuntil(b"\r\n\r\n")

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _one(conns: Connections, user: int, latencies: list, failures: list, since: float) -> None:
    try:
        status, data = await conns.post("/recommend", {"user_ids": [user], "k": 10})
        ok = status == 200 and len(json.loads(data)["results"][0]["items"]) == 10
    except Exception as e:  # noqa: BLE001 - a transport error is a failed request
        print(f"  request failed: {type(e).__name__}: {e}", file=sys.stderr)
        ok = False
    latencies.append(time.perf_counter() - since)
    if not ok:
        failures.append(user)


async def run_rate(port: int, users: np.ndarray, rate: float, seconds: float, in_flight: int, seed: int) -> dict:
    n = min(MAX_REQUESTS, int(rate * seconds))
    pick = np.random.default_rng(seed).choice(users, n)
    latencies, failures, gate = [], [], asyncio.Semaphore(in_flight)
    conns = Connections(port)
    await _warm(conns, users)

    async def send(user, at):
        async with gate:
            try:
                await _within(_one(conns, int(user), latencies, failures, at), GRACE)
            except asyncio.TimeoutError:  # unanswered for GRACE seconds: failed (its latency is not known)
                print(f"  request timed out after {GRACE} s", file=sys.stderr)
                failures.append(user)

    start, tasks = time.perf_counter(), []
    for i, user in enumerate(pick):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(user, at)))
    _, late = await asyncio.wait(tasks, timeout=GRACE)  # bounded in time too: what is still open fails
    for task in late:
        task.cancel()
    elapsed = time.perf_counter() - start
    conns.close()
    return _summary(latencies, failures + [None] * len(late), elapsed)


async def _within(job, seconds: float):
    """``await job``, cancelled after ``seconds``: a timer on Python 3.11+ (``wait_for`` wraps every request in
    a task of its own, CPU the client takes from the server it shares the cores with)."""
    if not hasattr(asyncio, "timeout"):  # Python 3.10
        return await asyncio.wait_for(job, seconds)
    async with asyncio.timeout(seconds):
        return await job


async def run_max(port: int, users: np.ndarray, concurrency: int, seconds: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    latencies, failures = [], []
    conns = Connections(port)
    await _warm(conns, users)
    start = time.perf_counter()
    stop = start + seconds

    async def worker():
        while time.perf_counter() < stop and len(latencies) < MAX_REQUESTS:
            await _one(conns, int(rng.choice(users)), latencies, failures, time.perf_counter())

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - start
    conns.close()
    return _summary(latencies, failures, elapsed)


async def _warm(conns: Connections, users) -> None:
    for user in users[:20]:  # first calls compile / page in the kernels
        await conns.post("/recommend", {"user_ids": [int(user)], "k": 10})


def _summary(latencies: list, failures: list, elapsed: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"rps": len(ms) / elapsed, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95),
            "p99": np.percentile(ms, 99), "failed": len(failures), "requests": len(ms)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``): what it cost, whoever else ran."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batching(url: str) -> float:
    import httpx

    meta = httpx.get(f"{url}/metadata").json()
    return meta["batched_requests"] / max(1, meta["batches"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", required=True, help="LABEL=ARTIFACT@RATE (ARTIFACT 'synthetic': built)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients of the 'max' mode")
    p.add_argument("--in-flight", type=int, default=256, help="most open requests of the 'rate' mode")
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--synthetic-items", type=int, default=1_000_000)
    p.add_argument("--synthetic-users", type=int, default=10_000)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its server
    import qrec

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average before {os.getloadavg()[0]:.1f}; python {platform.python_version()}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.case:
            label, rest = case.split("=", 1)
            artifact, rate = rest.rsplit("@", 1)
            path = (synthetic_artifact(Path(tmp) / "synthetic.safetensors", args.synthetic_items, args.synthetic_users)
                    if artifact == "synthetic" else Path(artifact))
            model = qrec.load(path)
            users = np.asarray(model.user_ids)
            size = f"{model.manifest['serving_bits'] / 8 / 2**20:.2f}"
            for mode in ("rate", "max"):
                runs, batching = [], []
                for r in range(args.repeats):
                    gc.collect()
                    gc.freeze()  # the client's torch and model out of its collector's sight, as qrec serve does
                    with server(path, args.max_batch) as (url, port, pid):
                        job = (run_rate(port, users, float(rate), args.seconds, args.in_flight, r) if mode == "rate"
                               else run_max(port, users, args.concurrency, args.seconds, r))
                        before, client_before = _cpu_seconds(pid), time.process_time()
                        runs.append(asyncio.run(job))
                        runs[-1]["server_cpu"] = (_cpu_seconds(pid) - before) / runs[-1]["requests"] * 1000
                        runs[-1]["client_cpu"] = (time.process_time() - client_before) / runs[-1]["requests"] * 1000
                        batching.append(_batching(url))
                med = lambda key: statistics.median(run[key] for run in runs)  # noqa: E731
                offered = f"{float(rate):g}/s" if mode == "rate" else f"{args.concurrency} clients"
                rows.append([label, f"{model.n_items:,}", size, offered, f"{med('rps'):.0f}", f"{med('p50'):.1f}",
                             f"{med('p95'):.1f}", f"{med('p99'):.1f}", sum(run["failed"] for run in runs),
                             sum(run["requests"] for run in runs), f"{statistics.median(batching):.1f}",
                             f"{med('server_cpu'):.2f}", f"{med('client_cpu'):.2f}"])
                print(f"  {label} {mode}: {rows[-1][4:]}", file=sys.stderr)
    print(f"load average after {os.getloadavg()[0]:.1f}", file=sys.stderr)
    table(rows, ["artifact", "items", "model MiB", "offered", "req/s", "p50 ms", "p95 ms", "p99 ms", "failed",
                 "requests", "users / scoring call", "server CPU ms / req", "client CPU ms / req"])


if __name__ == "__main__":
    main()

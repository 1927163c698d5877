"""Fuzz every reader of a file for as long as asked; count the outcomes; keep the inputs of every finding.

    PYTHONPATH=src python benchmarks/fuzz.py --inputs 100000 [--readers csv toml ...] [--time-limit 10]

Input ``i`` of reader ``r`` is a mutation of one of its valid seed inputs drawn from ``random.Random(f"{r}-{i}")``
(tests/fuzz_cases.py, shared with the hypothesis tests), so any finding replays from its name alone. Inputs run
in a worker process; one that has not finished after ``--time-limit`` seconds is a "hang": the worker is killed
and restarted. Outcomes: ok (read, invariants hold), refused (a QrecError), crash (any other exception),
invariant (read, an invariant broken), hang. Findings are written to ``--out/<reader>-<i>-<outcome>/``.
Prints a markdown table (also to ``--out/summary.md``); run it with ``nice -n 10`` beside other work.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import random
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz_cases  # noqa: E402

from mdtable import table  # noqa: E402


def _worker(conn, name: str, start: int, stop: int, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # readers may warn (modified data, dropped rows): not a finding
    reader = fuzz_cases.readers()[name]
    with fuzz_cases.scratch() as folder:
        for i in range(start, stop):
            inputs = fuzz_cases.make_input(reader, random.Random(f"{name}-{i}"))
            got, detail = fuzz_cases.outcome(reader, inputs, Path(folder))
            if got not in ("ok", "refused"):
                _keep(out / f"{name}-{i}-{got}", reader, inputs)
            conn.send((i, got, detail))


def _keep(folder: Path, reader, inputs) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file, data in zip(reader.files, inputs):
        (folder / file).write_bytes(data)


def _keep_input(name: str, i: int, folder: Path) -> None:
    """In a process of its own: the parent never imports what it fuzzes (a hang's input is rebuilt here)."""
    reader = fuzz_cases.readers()[name]
    _keep(folder, reader, fuzz_cases.make_input(reader, random.Random(f"{name}-{i}")))


def fuzz_reader(name: str, n: int, time_limit: float, out: Path, log=print) -> tuple[Counter, float, list[str]]:
    """Outcome counts of inputs 0..n-1 of ``name``, the seconds taken, and one line per finding."""
    ctx = mp.get_context("spawn")
    counts, findings, i, t0 = Counter(), [], 0, time.perf_counter()
    while i < n:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(child, name, i, n, out), daemon=True)
        proc.start()
        child.close()
        limit = time_limit + 60  # the first input also pays the worker's imports
        while i < n:
            if not parent.poll(limit):
                _finding(ctx, name, i, "hang", f"over {time_limit:g} s", out, findings)
                counts["hang"] += 1
                proc.kill()
                i += 1
                break
            try:
                j, got, detail = parent.recv()
            except EOFError:  # the worker died (a hard crash in C code): that input is a crash
                _finding(ctx, name, i, "crash", f"worker died (exit {proc.exitcode})", out, findings)
                counts["crash"] += 1
                i += 1
                break
            counts[got] += 1
            if got not in ("ok", "refused"):  # the worker kept its input
                findings.append(f"{name} input {j}: {got}: {detail}")
            i, limit = j + 1, time_limit
            if i % 10_000 == 0:
                log(f"  {name}: {i:,} inputs, {dict(counts)}, {time.perf_counter() - t0:,.0f} s")
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
        parent.close()
    return counts, time.perf_counter() - t0, findings


def _finding(ctx, name: str, i: int, got: str, detail: str, out: Path, findings: list[str]) -> None:
    """Keep the input of a finding the worker could not report (a folder of its files) and a line about it."""
    keeper = ctx.Process(target=_keep_input, args=(name, i, out / f"{name}-{i}-{got}"))
    keeper.start()
    keeper.join()
    findings.append(f"{name} input {i}: {got}: {detail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=10_000, help="inputs per reader")
    p.add_argument("--readers", nargs="+", default=list(fuzz_cases.readers()), choices=list(fuzz_cases.readers()))
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds one input may take before it is a hang")
    p.add_argument("--out", type=Path, default=Path("runs/fuzz"), help="findings and summary.md go here")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, lines = [], []
    for name in args.readers:
        counts, seconds, findings = fuzz_reader(name, args.inputs, args.time_limit, args.out,
                                                log=lambda s: print(s, file=sys.stderr, flush=True))
        rows.append([name, f"{args.inputs:,}", *(f"{counts[o]:,}" for o in fuzz_cases.OUTCOMES),
                     f"{args.inputs / seconds:,.0f}"])
        lines += findings
        print(f"{name}: {dict(counts)} in {seconds:,.0f} s", file=sys.stderr, flush=True)
        summary = _summary(rows, lines)
        (args.out / "summary.md").write_text(summary)  # after every reader: a long run reports as it goes
    print(summary)
    return 1 if lines else 0


def _summary(rows: list, findings: list[str]) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        table(rows, ["reader", "inputs", *fuzz_cases.OUTCOMES, "inputs/s"])
    shown = "".join(f"- {line}\n" for line in findings[:50])
    more = f"- ... and {len(findings) - 50} more findings\n" if len(findings) > 50 else ""
    return printed.getvalue() + shown + more

if __name__ == "__main__":
    sys.exit(main())

"""Every reader of a file qrec opens, with valid seed inputs, a mutator and the outcome rule, shared by the
hypothesis tests (tests/test_fuzz_readers.py, bounded) and ``benchmarks/fuzz.py`` (as long as asked).

The rule: a reader given any bytes either returns a result whose invariants hold ("ok") or raises an error of
the ``QrecError`` family ("refused"). Anything else is a finding: another exception ("crash"), a result that
breaks an invariant ("invariant"), or (fuzz.py only) an input that runs past its time limit ("hang").
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from qrec.errors import QrecError

OUTCOMES = ("ok", "refused", "crash", "invariant", "hang")


@dataclass(frozen=True)
class Reader:
    name: str
    files: tuple[str, ...]  # names the inputs are written under (suffixes matter to some readers)
    seeds: Callable[[], list[tuple[bytes, ...]]]  # valid inputs, one bytes per file
    read: Callable[[list[Path]], object]
    check: Callable[[object], None]  # invariants of a result; raises AssertionError
    structured: Callable[[random.Random, tuple[bytes, ...]], tuple[bytes, ...]] | None = None


# ---- invariants -------------------------------------------------------------------------------------------


def _check_interactions(data) -> None:
    from qrec.data.interactions import Interactions, Split

    if isinstance(data, Split):
        for part in (data.train, data.valid, data.test):
            _check_interactions(part)
            assert (part.n_users, part.n_items) == (data.n_users, data.n_items), "parts differ in id space"
        return
    assert isinstance(data, Interactions)
    assert data.users.dtype.kind == "i" and data.items.dtype.kind == "i"
    assert len(data) == 0 or (0 <= data.users.min() and data.users.max() < data.n_users), "user index out of range"
    assert len(data) == 0 or (0 <= data.items.min() and data.items.max() < data.n_items), "item index out of range"
    for extra in (data.timestamps, data.ratings):
        if extra is not None and extra.dtype.kind == "f":
            assert np.isfinite(extra).all(), "non-finite timestamp or rating"
    if data.timestamps is not None and data.timestamps.dtype.kind == "i":
        assert len(data) == 0 or data.timestamps.min() > np.iinfo(np.int64).min, "timestamp cast from a non-number"
    if data.user_ids.dtype.kind in "iu":
        assert len(np.unique(data.user_ids)) == data.n_users or data.meta.get("format") in ("lightgcn", "lastfm")


def _check_given(split) -> None:
    """``make_split`` of a read LightGCN pair: a non-empty test part whose users and items all have training rows."""
    _check_interactions(split)
    assert len(split.test) > 0, "empty test part accepted"
    assert np.all(split.train.user_counts()[split.test.users] > 0), "test user without training rows"
    assert np.all(split.train.item_counts()[split.test.items] > 0), "test item without training rows"


def _check_genres(genres) -> None:
    assert genres and all(isinstance(k, int) and k >= 0 for k in genres)


def _check_config(cfg) -> None:
    assert cfg.epochs >= 1 and cfg.eval_every >= 1 and cfg.patience >= 0 and math.isfinite(cfg.lr) and cfg.lr > 0
    assert all(k >= 1 for k in cfg.ks) and (cfg.threads is None or cfg.threads >= 1)


def _check_checkpoint(saved) -> None:
    assert isinstance(saved, dict) and isinstance(saved["state"]["epoch"], int)


def _check_model(result) -> None:
    model, manifest = result
    assert isinstance(manifest, dict)


# ---- readers ----------------------------------------------------------------------------------------------


def _lines(rng: random.Random, n_users: int, sep: str, fields) -> bytes:
    return "".join(sep.join(map(str, fields(u))) + "\n" for u in range(1, n_users + 1)).encode()


@functools.lru_cache(maxsize=1)
def _seed_tables() -> dict[str, list[tuple[bytes, ...]]]:
    rng = random.Random(0)
    seq = _lines(rng, 12, " ", lambda u: [u, *rng.sample(range(100, 140), rng.randint(3, 8))])
    lgcn_train = "".join(f"{u} " + " ".join(map(str, sorted(rng.sample(range(20), 6)))) + "\n" for u in range(10))
    lgcn_test = "".join(f"{u} " + " ".join(map(str, sorted(set(range(20)) - set(map(int, line.split()[1:])))[:2]))
                        + "\n" for u, line in enumerate(lgcn_train.splitlines()))
    ratings = [(u, i, rng.randint(1, 5), 880_000_000 + 1000 * u + i) for u in range(1, 9) for i in rng.sample(range(1, 30), 5)]
    return {
        "sequences": [(seq,), (b"1 5 6 7\n2 5 8\n\n3 9\n",)],
        "lightgcn": [(lgcn_train.encode(), lgcn_test.encode()), (b"0 0 1 2\n1 1 2 3\n", b"0 3\n1 0\n")],
        "ml100k": [("".join("\t".join(map(str, r)) + "\n" for r in ratings).encode(),)],
        "ml1m": [("".join("::".join(map(str, r)) + "\n" for r in ratings).encode(),)],
        "lastfm": [(b"1\t1\t10\n1\t2\t3.2466e+05\n2\t2\t7\n", b"1\t3\t1\n2\t1\t4\n")],
        "recbole": [(b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                     + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings).encode(),)],
        "csv": [(b"userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ratings).encode(),),
                (b"user_id,item_id,timestamp\nu1,a,2020-01-01\nu2,b,2021-02-03T04:05:06Z\nu1,b,2020-01-02\n",)],
        "genres": [(b"1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n",),
                   (b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n",)],
        "toml": [(b'dataset = "ml-100k"\nmodel = "gmf"\nepochs = 3\nlr = 0.01\nks = [10, 20]\nthreads = 1\n'
                  b'[model_options]\nn_layers = 2\n',),
                 (b'embedding = "mgqe64x256/64@0.1"\nseed = 2\npatience = 5\neval_every = 2\ndevice = "cpu"\n',)],
    }


def _read_pair(reader):
    return lambda paths: reader(*paths)


def _read_given(paths):
    from qrec.data.loaders import read_lightgcn_split
    from qrec.data.splits import make_split

    return make_split(read_lightgcn_split(*paths), "given")


def _data_readers() -> list[Reader]:
    from qrec.data import loaders
    from qrec.train.config import RunConfig

    seeds = _seed_tables()
    table = lambda name: functools.partial(lambda n: seeds[n], name)  # noqa: E731
    return [
        Reader("sequences", ("sequences.txt",), table("sequences"), _read_pair(loaders.read_sequences), _check_interactions),
        Reader("lightgcn", ("train.txt", "test.txt"), table("lightgcn"), _read_given, _check_given),
        Reader("ml100k", ("u.data",), table("ml100k"), _read_pair(loaders.read_ml100k), _check_interactions),
        Reader("ml1m", ("ratings.dat",), table("ml1m"), _read_pair(loaders.read_movielens_dat), _check_interactions),
        Reader("lastfm", ("data1.txt", "test1.txt"), table("lastfm"), _read_pair(loaders.read_lastfm), _check_interactions),
        Reader("recbole", ("x.inter",), table("recbole"), _read_pair(loaders.read_recbole_inter), _check_interactions),
        Reader("csv", ("x.csv",), table("csv"), _read_pair(loaders.read_named_table), _check_interactions),
        Reader("genres", ("movies.dat",), table("genres"), _read_pair(loaders.read_movie_genres), _check_genres),
        Reader("toml", ("run.toml",), table("toml"), _read_pair(RunConfig.from_toml), _check_config),
    ]


@functools.lru_cache(maxsize=1)
def _model_files() -> dict:
    """A real checkpoint and artifact of a tiny untrained GMF with SQ-4 item codes, built once."""
    import torch

    from qrec.data.splits import make_split
    from qrec.data.synthetic import random_interactions
    from qrec.export.artifact import export_model, history_length, serving_data
    from qrec.train.checkpoint import save_checkpoint
    from qrec.train.config import RunConfig
    from qrec.train.trainer import build, make_optimizer

    split = make_split(random_interactions(12, 20, 150, seed=0), "loo")
    cfg = RunConfig(dataset="synthetic", dim=4, embedding="sq4")
    model = build(cfg, split)
    folder = Path(tempfile.mkdtemp(prefix="qrec-fuzz-seeds-"))
    export_model(model, cfg.to_dict(), folder / "m.safetensors", serving_data(split, history_length(model)))
    state = {"epoch": 1, "history": [{"epoch": 1, "loss": 0.5}], "best": {}, "best_epoch": 1, "best_model": None,
             "train_seconds": 0.1, "seen": 10}
    save_checkpoint(folder / "checkpoint.pt", {"config": cfg.to_dict(), "model": model.state_dict(),
                                               "optimizer": make_optimizer(model, cfg).state_dict(), "state": state})
    torch.set_num_threads(1)
    return {"split": split, "artifact": (folder / "m.safetensors").read_bytes(),
            "checkpoint": (folder / "checkpoint.pt").read_bytes()}


def _load_artifact(paths):
    from qrec.export.artifact import load_model

    return load_model(paths[0])


def _load_checkpoint(paths):
    from qrec.train.checkpoint import load_checkpoint

    return load_checkpoint(paths[0])


def _manifest_mutation(rng: random.Random, files: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The artifact with its JSON manifest changed as a value and every hash recomputed: reaches the manifest's
    readers past the checksums that byte mutations mostly stop at (a crafted file, not a damaged one)."""
    from qrec.export.container import pack, unpack

    tensors, manifest = unpack(files[0], "m.safetensors")
    manifest.pop("tensors")
    _mutate_json(rng, manifest)
    try:
        return (pack(tensors, manifest)[0],)
    except (TypeError, ValueError):  # the writer refuses what JSON cannot hold (nan keys, ...): keep the original
        return files


_ODD_VALUES = (None, True, -1, 0, 2**63, 1e300, float("nan"), "", "x" * 300, "/etc/passwd", [], {}, [1, "a"],
               {"a": 1}, "dpq0x0", "mgqe64x256/64@9", "../../x", 3.5)


def _mutate_json(rng: random.Random, node) -> None:
    """One change somewhere in a JSON tree: a value replaced by an odd one, a key dropped or added."""
    path = []
    while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        if not isinstance(node[key], (dict, list)) or not node[key]:
            break
        path.append(key)
        node = node[key]
    if isinstance(node, dict) and node:
        key, action = rng.choice(list(node)), rng.random()
        if action < 0.2:
            del node[key]
        elif action < 0.3:
            node[rng.choice(["tables", "served", "config", "x"])] = rng.choice(_ODD_VALUES)
        else:
            node[key] = rng.choice(_ODD_VALUES)
    elif isinstance(node, list) and node:
        node[rng.randrange(len(node))] = rng.choice(_ODD_VALUES)


def _model_readers() -> list[Reader]:
    files = lambda key: lambda: [(_model_files()[key],)]  # noqa: E731
    return [
        Reader("artifact", ("m.safetensors",), files("artifact"), _load_artifact, _check_model),
        Reader("manifest", ("m.safetensors",), files("artifact"), _load_artifact, _check_model,
               structured=_manifest_mutation),
        Reader("checkpoint", ("checkpoint.pt",), files("checkpoint"), _load_checkpoint, _check_checkpoint),
    ]


@functools.lru_cache(maxsize=1)
def readers() -> dict[str, Reader]:
    return {r.name: r for r in _data_readers() + _model_readers()}


# ---- mutation ---------------------------------------------------------------------------------------------

_TOKENS = (b"inf", b"-inf", b"nan", b"NaN", b"1e300", b"-1", b"0", b"1.5", b"9" * 25, b"9" * 300, b"\xef\xbb\xbf",
           b"\xff", b"\x00", b"\r\n", b"\n", b"\n\n", b"\t", b" ", b",", b"::", b"|", b"NaT", b"2020-01-01",
           b"\"", b"'", b"[", b"]", b"=", b"#", b"user_id:token", b"\\", b"\xc3\x28", b"\xe2\x82", b"-0", b"+1")


def mutate(rng: random.Random, data: bytes) -> bytes:
    """1-4 random edits: byte flips, interesting tokens, deleted / repeated spans, truncation, swapped lines."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(data) + 1)
        action = rng.randrange(8)
        if action == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif action in (1, 2):
            data[pos:pos] = rng.choice(_TOKENS)
        elif action == 3:
            del data[pos : pos + rng.randint(1, 16)]
        elif action == 4:
            span = data[pos : pos + rng.randint(1, 64)]
            data[pos:pos] = span * rng.randint(1, 4)
        elif action == 5:
            del data[pos:]
        elif action == 6:
            lines = bytes(data).split(b"\n")
            rng.shuffle(lines)
            data = bytearray(b"\n".join(lines))
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


def make_input(reader: Reader, rng: random.Random) -> tuple[bytes, ...]:
    """A mutated seed input: one file of it (or its structure, for readers that have a structured mutator)."""
    files = rng.choice(reader.seeds())
    if reader.structured is not None:
        return reader.structured(rng, files)
    k = rng.randrange(len(files))
    return files[:k] + (mutate(rng, files[k]),) + files[k + 1 :]


def scratch() -> tempfile.TemporaryDirectory:
    """A temporary folder for the inputs, in memory where the system has one (file creation dominates otherwise)."""
    return tempfile.TemporaryDirectory(prefix="qrec-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def outcome(reader: Reader, inputs: tuple[bytes, ...], folder: Path) -> tuple[str, str]:
    """``(outcome, detail)`` of ``reader`` on ``inputs`` written into ``folder``."""
    paths = []
    for name, data in zip(reader.files, inputs):
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    try:
        result = reader.read(paths)
    except QrecError as e:
        return "refused", type(e).__name__
    except Exception as e:  # noqa: BLE001 - the finding itself
        return "crash", f"{type(e).__name__}: {str(e)[:200]}"
    try:
        reader.check(result)
    except AssertionError as e:
        return "invariant", str(e)[:200]
    return "ok", ""

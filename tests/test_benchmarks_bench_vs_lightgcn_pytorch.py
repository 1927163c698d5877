"""``benchmarks/bench_vs_lightgcn_pytorch.py``: the epoch estimate, a clear stop without the peer's checkout, and
(with LightGCN-PyTorch checked out and Gowalla present) the side-by-side run end to end on a slice of Gowalla (qrec with float32 and with bfloat16 propagation)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_vs_lightgcn_pytorch as bench  # noqa: E402

PEER = Path(os.environ.get("QREC_PEER_LIGHTGCN", ROOT.parent / "peer" / "LightGCN-PyTorch"))


def test_epoch_is_measured_whole_or_scaled_from_its_steps():
    start, first, end = bench.Clock(10.0, 1.0), bench.Clock(12.0, 2.0), bench.Clock(17.0, 12.0)
    whole = bench.Epoch(start, first, end, steps=10, n_batches=10, loss=0.69)
    assert (whole.seconds, whole.setup, whole.step, whole.cpu_seconds) == pytest.approx((7.0, 2.0, 0.5, 11.0))
    part = bench.Epoch(start, first, end, steps=5, n_batches=10, loss=0.69)
    assert part.seconds == pytest.approx(2.0 + 1.0 * 10)  # the setup once, the steps scaled to the epoch
    assert part.cpu_seconds == pytest.approx(1.0 + 2.0 * 10)


def test_a_folder_without_their_code_stops_with_its_name(tmp_path, graph_dir):
    with pytest.raises(SystemExit, match="not a LightGCN-PyTorch checkout"):
        bench.main(["--peer", str(tmp_path), "--data", str(graph_dir), "--threads", str(torch.get_num_threads())])


def _gowalla_slice(gowalla: Path, folder: Path, users: int = 150) -> Path:
    """The first ``users`` users of Gowalla, their test items cut to items the slice trains on (both sides
    refuse test items they cannot score, the peer a user without test items)."""
    train = [line.split() for line in (gowalla / "train.txt").read_text().splitlines()[:users]]
    seen = {i for line in train for i in line[1:]}
    test = [line.split() for line in (gowalla / "test.txt").read_text().splitlines()[:users]]
    test = [[line[0], *(i for i in line[1:] if i in seen)] for line in test]
    (folder / "train.txt").write_text("".join(" ".join(line) + "\n" for line in train))
    (folder / "test.txt").write_text("".join(" ".join(line) + "\n" for line in test if len(line) > 1))
    return folder


@pytest.mark.slow  # a subprocess importing torch, qrec and the peer (and building their C++ sampler once)
def test_side_by_side_on_a_gowalla_slice_prints_the_table(shared_data, tmp_path):
    if not (PEER / "code" / "Procedure.py").is_file():
        pytest.skip(f"no LightGCN-PyTorch checkout at {PEER} (set QREC_PEER_LIGHTGCN)")
    if not (shared_data / "gowalla" / "train.txt").is_file():
        pytest.skip("gowalla not in the shared data")
    data = _gowalla_slice(shared_data / "gowalla", tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_vs_lightgcn_pytorch.py"), "--peer", str(PEER),
           "--data", str(data), "--threads", "1", "--batches", "2", "--repeats", "1",
           "--propagation", "float32", "bfloat16"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]]
                                             for line in out.stdout.splitlines() if line.startswith("| "))}
    epoch = next(v for k, v in rows.items() if k.startswith("epoch (s, median of 1; first 2 batches"))
    assert all(c.startswith("~") for c in epoch[:3]) and all(c.endswith("x") for c in epoch[3:5])
    timed = rows["batches of 2048 per epoch (timed)"]
    assert all(cell.endswith("(2)") for cell in timed[:3])
    assert "qrec, bfloat16 propagation" in out.stdout and "1 torch threads on every side" in out.stdout

"""``qrec.threads.set_threads``: a thread count set for the process survives qrec's compiled (numba) kernels."""

import subprocess
import sys

import pytest

SCRIPT = """
import torch
from qrec.threads import set_threads
from qrec.retrieval.topk import merged_topk
set_threads(1)
assert torch.get_num_threads() == 1  # torch's pool set up (a real run has done torch work by now)
merged_topk(torch.randn(8, 1000), 5)  # a numba parallel launch (OpenMP layer)
print(torch.get_num_threads())
"""


@pytest.mark.skipif(__import__("os").cpu_count() < 2, reason="one core: nothing to raise the count to")
def test_one_thread_stays_one_after_a_compiled_parallel_kernel():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"  # torch.set_num_threads(1) alone: 2 after the launch

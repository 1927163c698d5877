#!/usr/bin/env bash
# One lent GPU machine, one call: CUDA tests, the training and scoring benchmarks on the GPU, then experiment
# runs on CUDA in parallel until a deadline. Everything it writes lands in $OUT (logs, and one tar of the records).
#
#   OUT=/tmp/gpu QREC_DATA_DIR=../shared/data DEADLINE=560 bash benchmarks/gpu_session.sh [[preset:]run-filter ...]
#
# Each argument is one process: `qrec experiment <preset> --only <run-filter> --device cuda` (preset defaults to
# mgqe-table3). BENCH=0 skips the benchmarks (phases 2 and 3) when the call is for experiments.
#
# Needs python3 with torch (CUDA), numpy, scipy, pandas, numba, safetensors, tqdm, pytest, hypothesis; qrec is
# taken from src/ (no install). Each phase has its own timeout, so a slow phase cannot eat the ones after it.
set -u
OUT=${OUT:-/tmp/qrec-gpu}; DEADLINE=${DEADLINE:-560}; BENCH=${BENCH:-1}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 QREC_DATA_DIR=${QREC_DATA_DIR:-$PWD/../shared/data}
mkdir -p "$OUT"
t0=$(date +%s); left() { echo $((DEADLINE - ($(date +%s) - t0))); }
stamp() { echo "[$(($(date +%s) - t0))s] $*" | tee -a "$OUT/session.log"; }

{ nvidia-smi; python3 -c "import torch, numba, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda,
  torch.cuda.get_device_name(), 'numba', numba.__version__, 'numpy', numpy.__version__)"; nproc; } > "$OUT/env.txt" 2>&1
stamp "env: $(tail -2 "$OUT/env.txt" | tr '\n' ' ')"

# 1. CUDA tests, beside the benchmark (they use CPU cores and little GPU time)
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py "tests/test_compress_tables.py" -k "cuda" \
  > "$OUT/tests.log" 2>&1 &
tests=$!

# 2. training step time per embedding, interleaved in one process per backbone (the ratio to full is the number)
if [ "$BENCH" != 0 ]; then
stamp "bench_train"
timeout 200 python3 benchmarks/bench_train.py --device cuda --models gmf neumf \
  --specs full lr48 sq8 dpq64x256 mgqe64x256/64@0.1 --rounds 3 --max-batches 300 > "$OUT/bench_train.md" 2> "$OUT/bench_train.err"
stamp "bench_train rc=$?"

# 3. full-ranking scoring, Gowalla shape, float vs codes on the GPU
timeout 90 python3 benchmarks/bench_scoring.py --device cuda --repeats 5 > "$OUT/bench_scoring.md" 2>&1
stamp "bench_scoring rc=$?"
fi

# 4. optional: experiment runs on CUDA, one process each, until the deadline. An unfinished run leaves no record
#    (a CUDA checkpoint resumes only on CUDA, and runs/ does not come back), only its log. Measured 2026-11-25:
#    seven processes time-slice one H200 and together do the work of ~2.3 single ones; a GMF MGQE run alone
#    needs ~10 minutes (BENCHMARKS.md), so pass one or two of those.
logs=$(mktemp -d); presets=""
for item in "$@"; do
  preset=mgqe-table3; name=$item
  case $item in *:*) preset=${item%%:*}; name=${item#*:};; esac
  presets="$presets results/$preset"
  timeout $(( $(left) - 15 )) python3 -m qrec.cli experiment "$preset" --only "$name" --device cuda --threads 1 \
    > "$logs/exp-${preset}-${name//[^A-Za-z0-9_.-]/_}.log" 2>&1 &
done
wait $tests; stamp "tests rc=$? $(tail -1 "$OUT/tests.log")"
wait
stamp "experiments done; packing"
# the device tool returns at most 8 files: experiment logs and records travel as one tar
tar czf "$OUT/experiments.tgz" -C "$logs" . -C "$PWD" $(ls -d $presets 2>/dev/null | sort -u) 2>/dev/null
stamp "end"

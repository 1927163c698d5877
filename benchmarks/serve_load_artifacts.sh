#!/usr/bin/env bash
# The artifacts benchmarks/bench_serve_load.py serves (the third, synthetic 1M items, it builds itself):
#
#   PYTHONPATH=src PYTHON=.venv/bin/python QREC_DATA_DIR=/path/to/data bash benchmarks/serve_load_artifacts.sh runs/serve-load
#
# writes runs/serve-load/ml1m-gmf-mgqe.safetensors and runs/serve-load/gowalla-binary-gcn.safetensors. Short runs:
# the load test measures serving speed, which does not depend on the weights (ML-1M GMF-MGQE, 3 epochs: test
# HR@10 6.92%, 3-5 min on one thread; Gowalla 1-bit GCN, 1 epoch: test Recall@20 7.69%, 30-60 s; rebuilt byte for
# byte on a rerun). Resumable: an artifact already there is kept, a run folder already trained resumes.
#
# ML-1M is SASRec's preprocessed sequences (ml-1m-seq, one line per user, 5-core filtered as SASRec does);
# Gowalla is LightGCN's train.txt / test.txt (protocol given). PYTHON: an interpreter that imports qrec.
set -eu
OUT=${1:-runs/serve-load}
QREC="${PYTHON:-python} -m qrec.cli"
mkdir -p "$OUT"
if [ ! -f "$OUT/ml1m-gmf-mgqe.safetensors" ]; then
  $QREC train --dataset ml-1m-seq --min-count 5 --model gmf --embedding 'mgqe64x256/64@0.1' --epochs 3 \
    --threads 1 --out "$OUT/ml1m-gmf-mgqe" -q
  $QREC export "$OUT/ml1m-gmf-mgqe" "$OUT/ml1m-gmf-mgqe.safetensors"
fi
if [ ! -f "$OUT/gowalla-binary-gcn.safetensors" ]; then
  $QREC train --dataset gowalla --protocol given --model binary-gcn --epochs 1 --batch-size 8192 --lr 5e-3 \
    --k 20 --eval-every 2 --threads 1 --out "$OUT/gowalla-binary-gcn" -q
  $QREC export "$OUT/gowalla-binary-gcn" "$OUT/gowalla-binary-gcn.safetensors"
fi
ls -l "$OUT"/*.safetensors

"""Surprise's SVD / k-NN Baseline on qrec's own 5 folds of ML-100K: the mgqe-table5 ratings rows' anchor on the
same test pairs (Surprise's published benchmark draws its own random folds). A quality reference, not a
timing benchmark; its numbers are quoted in results/mgqe-table5/NOTES.md.

    pip install scikit-surprise   # not a qrec dependency
    QREC_DATA_DIR=../shared/data python benchmarks/surprise_same_folds.py [--algos svd knn-baseline svdpp]

Fold f is ``make_split(ml-100k, "kfold-5", seed=f)``: its test part is what qrec's seed-f run is scored on.
Surprise trains on the whole training part (qrec holds 10% of it out to pick the epoch), with its default
parameters, seeded ``random_state=f`` where it has one (SVD, SVD++). Prints RMSE / MAE per fold, their mean
+/- sample std, and the median fit seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from qrec.data.datasets import load_dataset
from qrec.data.splits import make_split


def _algorithm(name: str, fold: int):
    import surprise

    return {"svd": lambda: surprise.SVD(random_state=fold), "svdpp": lambda: surprise.SVDpp(random_state=fold),
            "knn-baseline": lambda: surprise.KNNBaseline(verbose=False)}[name]()


def _trainset(part, folder: Path):
    """A Surprise trainset of ``part`` through a u.data-style file (raw ids as strings, as Surprise reads them)."""
    import surprise

    path = folder / "train.tsv"
    lines = (f"{u}\t{i}\t{r:g}" for u, i, r in zip(part.user_ids[part.users], part.item_ids[part.items], part.ratings))
    path.write_text("\n".join(lines) + "\n")
    reader = surprise.Reader(line_format="user item rating", sep="\t", rating_scale=(1, 5))
    return surprise.Dataset.load_from_file(str(path), reader).build_full_trainset()


def run(algos: list[str], k: int = 5) -> dict[str, list[tuple[float, float, float]]]:
    from surprise import accuracy

    data = load_dataset("ml-100k")
    out = {a: [] for a in algos}
    for fold in range(k):
        split = make_split(data, f"kfold-{k}", seed=fold)
        both = np.concatenate([split.train.users, split.valid.users]), np.concatenate([split.train.items, split.valid.items])
        training = type(split.train)(users=both[0], items=both[1], n_users=split.n_users, n_items=split.n_items,
                                     user_ids=split.train.user_ids, item_ids=split.train.item_ids,
                                     ratings=np.concatenate([split.train.ratings, split.valid.ratings]))
        test = [(str(split.test.user_ids[u]), str(split.test.item_ids[i]), float(r))
                for u, i, r in zip(split.test.users, split.test.items, split.test.ratings)]
        with tempfile.TemporaryDirectory() as folder:
            trainset = _trainset(training, Path(folder))
        for name in algos:
            algo = _algorithm(name, fold)
            t0 = time.perf_counter()
            algo.fit(trainset)
            seconds = time.perf_counter() - t0
            predictions = algo.test(test)
            out[name].append((accuracy.rmse(predictions, verbose=False), accuracy.mae(predictions, verbose=False), seconds))
            print(f"fold {fold} {name}: rmse {out[name][-1][0]:.4f} mae {out[name][-1][1]:.4f} fit {seconds:.1f}s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=["svd", "knn-baseline"], choices=["svd", "svdpp", "knn-baseline"])
    results = run(p.parse_args().algos)
    print("\n| algorithm (Surprise defaults) | folds | RMSE | MAE | fit s (median) |\n|---|---|---|---|---|")
    for name, rows in results.items():
        rmse, mae, secs = zip(*rows)
        print(f"| {name} | {len(rows)} | {statistics.mean(rmse):.4f} ± {statistics.stdev(rmse):.4f} | "
              f"{statistics.mean(mae):.4f} ± {statistics.stdev(mae):.4f} | {statistics.median(secs):.1f} |")


if __name__ == "__main__":
    main()

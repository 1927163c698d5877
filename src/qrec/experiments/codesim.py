"""MGQE Fig. 8: do the learned codes cluster similar items? Code similarity between item categories.

The similarity of two items is the number of positions where their codes pick the same centroid (the paper's
footnote 5: 0 to D), reported as a fraction of the positions so that SQ's d per-dimension buckets and MGQE's D
sub-vector codes compare. Per category, two disjoint sets of items are drawn among the items in exactly one
of the chosen categories; cell (a, b) averages every pair (set-1 item of a, set-2 item of b), so a diagonal
cell never pairs an item with itself. ``separation`` = mean diagonal / mean off-diagonal: how much more alike
the codes of same-category items are (1 = no structure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qrec.data.loaders import read_movie_genres
from qrec.errors import QrecError

FIG8_CATEGORIES = ("Sci-Fi", "Romance", "Animation", "Horror")


def category_sets(item_genres: list[frozenset[str]], categories, per_set: int, seed: int = 0):
    """Per category, two disjoint arrays of item indices (at most ``per_set`` each) drawn among the items
    whose genres hold exactly one of ``categories``."""
    rng = np.random.default_rng(seed)
    chosen = set(categories)
    sets = []
    for c in categories:
        pool = np.array([i for i, g in enumerate(item_genres) if g & chosen == {c}], dtype=np.int64)
        m = min(per_set, len(pool) // 2)
        if m == 0:
            raise QrecError(f"category {c!r}: fewer than 2 items in exactly this one of {sorted(chosen)}")
        picked = rng.permutation(pool)[: 2 * m]
        sets.append((np.sort(picked[:m]), np.sort(picked[m:])))
    return sets


def code_similarity(codes: np.ndarray, sets) -> np.ndarray:
    """``(G, G)``: mean fraction of positions where a set-1 item of category a and a set-2 item of b share
    their code."""
    out = np.empty((len(sets), len(sets)))
    for a, (first, _) in enumerate(sets):
        for b, (_, second) in enumerate(sets):
            out[a, b] = (codes[first][:, None, :] == codes[second][None, :, :]).mean()
    return out


def separation(matrix: np.ndarray) -> float:
    off = ~np.eye(len(matrix), dtype=bool)
    return float(np.diag(matrix).mean() / matrix[off].mean())


GENRE_FILES = ("movies.dat", "u.item", "ml-100k.item")  # beside ratings.dat / u.data / RecBole's ml-100k.inter


def item_codes(run: str | Path) -> tuple[np.ndarray, list, str, Path | None]:
    """A trained run's item codes ``(n_items, positions)``, raw item ids, item table spec, and the MovieLens
    genre file beside its data, if there is one."""
    from qrec.data.datasets import resolved_source
    from qrec.train.trainer import load_trained

    model, cfg, split = load_trained(run)
    table = model.embedding_tables().get("item_table")
    if table is None or table.spec == "full" or table.spec.startswith("lr"):
        raise QrecError(f"{run}: needs a model with an item table of codes (sq, dpq, mgqe), got "
                        f"{table.spec if table is not None else type(model).__name__}")
    folder = resolved_source(cfg.dataset, cfg.data_path).files[0].parent
    beside = next((folder / f for f in GENRE_FILES if (folder / f).is_file()), None)
    return table.codes().cpu().numpy(), list(split.train.item_ids), table.spec, beside


def fig8(runs, genres_file=None, categories=FIG8_CATEGORIES, per_set: int = 50, seed: int = 0) -> list[dict]:
    """For each run: its spec, the set sizes, the similarity matrix and its separation. ``genres_file``: by
    default the MovieLens genre file beside each run's data."""
    out = []
    for run in runs:
        codes, raw_ids, spec, beside = item_codes(run)
        if genres_file is None and beside is None:
            raise QrecError(f"{run}: no {' or '.join(GENRE_FILES)} beside its data; pass --genres")
        genres = read_movie_genres(genres_file or beside)
        missing = [r for r in raw_ids if int(r) not in genres]
        if missing:
            raise QrecError(f"{genres_file or beside}: no genres for {len(missing)} items of {run} (first: {missing[0]})")
        sets = category_sets([genres[int(r)] for r in raw_ids], categories, per_set, seed)
        matrix = code_similarity(codes, sets)
        out.append({"run": str(run), "spec": spec, "per_set": [len(s[0]) for s in sets], "matrix": matrix,
                    "separation": separation(matrix)})
    return out


def format_fig8(results: list[dict], categories) -> str:
    lines = []
    for r in results:
        lines += [f"{r['run']} ({r['spec']}): separation {r['separation']:.2f} "
                  f"(items per set: {', '.join(map(str, r['per_set']))})",
                  "| | " + " | ".join(categories) + " |", "|---" * (len(categories) + 1) + "|"]
        lines += [f"| {c} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for c, row in zip(categories, r["matrix"])]
        lines.append("")
    return "\n".join(lines)


def plot_fig8(results: list[dict], categories, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, r in zip(axes[0], results):
        ax.imshow(r["matrix"], cmap="Blues")
        ax.set_xticks(range(len(categories)), categories, rotation=30)
        ax.set_yticks(range(len(categories)), categories)
        for (a, b), v in np.ndenumerate(r["matrix"]):
            ax.text(b, a, f"{v:.3f}", ha="center", va="center", fontsize=8)
        ax.set_title(f"{r['spec']} (separation {r['separation']:.2f})", fontsize=10)
    sep = "\n" if len(results) < 2 else " "  # one narrow panel: the title on two lines, never clipped
    fig.suptitle(f"Code similarity between categories{sep}(fraction of positions with the same code)", fontsize=10)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return output

"""The dataset catalogue: every registered name, its files and layouts, where it is published and with which
checksums, how derived and computed datasets are made, and the generated ones (``synthetic-powerlaw:...``).

Pure data and small constructors: resolution (where a name's files are found) lives in ``datasets.py``, the
checksummed download in ``fetch.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from qrec.data import powerlaw
from qrec.data.interactions import Interactions, Split
from qrec.data.loaders import (
    read_lastfm,
    read_lightgcn_split,
    read_ml100k,
    read_movielens_dat,
    read_named_table,
    read_recbole_inter,
    read_sequences,
    write_sequences,
)
from qrec.data.relevance import pearson_pairs



class ModifiedDataWarning(UserWarning):
    """A local dataset file differs from the published one (its sha256 does not match)."""


@dataclass(frozen=True)
class Layout:
    """One way a dataset can sit in a folder: these files, read by ``read(*paths, name=...)``."""

    files: tuple[str, ...]
    read: Callable[..., Interactions | Split]


@dataclass(frozen=True)
class Remote:
    """Where to download one file of a dataset, and the published checksum(s) of what comes back.

    ``member`` names the file inside a zip archive; ``md5``/``sha256`` then check the archive. ``side``: other
    members of the same archive kept beside it (side information for analyses, e.g. MovieLens genres).
    """

    url: str
    file: str
    md5: str | None = None
    sha256: str | None = None
    member: str | None = None
    side: tuple[str, ...] = ()


@dataclass(frozen=True)
class Derivation:
    """How a dataset is computed from another registered one (e.g. ``ml-1m-seq`` from the official
    ``ml-1m`` archive): ``write(source_data, target_file)`` writes the canonical layout's one file;
    ``side`` files found beside the source (e.g. ``movies.dat``) are copied beside the result."""

    source: str
    write: Callable[[Interactions, Path], None]
    side: tuple[str, ...] = ()


@dataclass(frozen=True)
class Computed:
    """A dataset that exists only as a recipe over another (e.g. item-item relevance from ratings): always
    ``build(base)``, cached under the name ``recipe`` and the base files' sha256 (a ``Derivation`` instead writes
    one canonical file when no copy of a dataset with files of its own is found)."""

    base: str
    build: Callable[[Interactions], Interactions]
    recipe: str


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its layouts (first = canonical), known hashes and download recipe."""

    name: str
    description: str
    layouts: tuple[Layout, ...]
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> published sha256
    remote: tuple[Remote, ...] = ()
    bundled: Callable[[], Path | None] | None = None  # a folder shipped inside an installed package
    note: str = ""  # extra advice when the dataset cannot be found
    derived: Derivation | None = None  # computed from another dataset when no copy is found
    computed: Computed | None = None  # a recipe over another dataset (no files of its own)


def _github(repo: str, ref: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{ref}/{path}"


def _lightgcn_remote(repo: str, ref: str, folder: str, sha256: dict | None = None, md5: dict | None = None):
    """train.txt and test.txt from ``repo@ref:folder`` with their checksums."""
    return tuple(
        Remote(_github(repo, ref, f"{folder}/{f}"), f, md5=(md5 or {}).get(f), sha256=(sha256 or {}).get(f))
        for f in ("train.txt", "test.txt")
    )


def _recbole_ml100k() -> Path | None:
    """The folder of ``ml-100k.inter`` shipped in the recbole wheel, found without importing recbole
    (its import pulls in dependencies that are deliberately not installed)."""
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "dataset_example" / "ml-100k"


_LIGHTGCN = Layout(("train.txt", "test.txt"), read_lightgcn_split)
_RECZOO = ("reczoo/RecZoo", "fd2379d3b5df99d23513a8c423c083d27a45126d")
_GOWALLA_SHA = {
    "train.txt": "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
    "test.txt": "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
}
_ML1M_LGCN_SHA = {
    "train.txt": "31fe589506162c76c90e87ddd017642f73655a3f959bd70deec8dda142608f4e",
    "test.txt": "c8b4f275ea29fdb5560f0d9014d85a3865743f3089dca0259c79fee30dcdbdcd",
}
_ELECTRONICS_SHA = {
    "train.txt": "884a6569732136656d67e530798ecfcb6b9def627e81685c30cb18697a7d668f",
    "test.txt": "33b54edda8047be66ae135b9b52934f07858c482ec2a54995054e4eb2157f89d",
}
_LASTFM_SHA = {
    "data1.txt": "c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded",
    "test1.txt": "de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9",
}
# md5 of amazon-book train.txt / test.txt as listed by reczoo's AmazonBooks_m1 README (the same
# pair is in DHG's AmazonBook loader); no sha256 is published.
_AMAZON_BOOK_MD5 = {"train.txt": "c916ecac04ca72300a016228258b41ed", "test.txt": "30f8ccfea18d25007ba9fb9aba4e174d"}
# md5 of yelp2018 train.txt / test.txt as listed by reczoo's Yelp18_m1 README (a copy of LightGCN's split)
_YELP2018_MD5 = {"train.txt": "1b8b5d22a227e01d6de002c53d32b4c4", "test.txt": "0d57d7399862c32152b045ec5d2698e7"}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-100k",
            "MovieLens-100K ratings with timestamps (943 users, 1,682 items, 100,000 ratings)",
            layouts=(Layout(("u.data",), read_ml100k), Layout(("ml-100k.inter",), read_recbole_inter)),
            sha256={
                "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                # ml-100k.inter as shipped in the recbole 1.2.1 wheel (the same 100,000 ratings)
                "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            },
            remote=(Remote("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "u.data",
                           md5="0e33842e24a9c977be4e0107933c0723", member="ml-100k/u.data",
                           side=("ml-100k/u.item",)),),
            bundled=_recbole_ml100k,
        ),
        DatasetSpec(
            "ml-1m",
            "MovieLens-1M ratings.dat with ratings and timestamps (6,040 users, 3,706 items, 1,000,209)",
            layouts=(Layout(("ratings.dat",), read_movielens_dat),),
            remote=(Remote("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ratings.dat",
                           md5="c4d9eecfca2ab87c1945afe126590906", member="ml-1m/ratings.dat",
                           side=("ml-1m/movies.dat",)),),
        ),
        DatasetSpec(
            "ml-1m-seq",
            "MovieLens-1M as per-user chronological sequences, no timestamps (SASRec/DiffuRec ml-1m)",
            layouts=(Layout(("sequences.txt",), read_sequences),),
            sha256={"sequences.txt": "3b3803d72c034929ada18b2cbd114296261c012b7a3e10282543adeceba53fb1"},
            note="without a copy, sequences.txt is derived from the official ML-1M archive (the 'ml-1m' "
            "dataset, md5-checked): each user's ratings sorted by timestamp, ties in file order.",
            derived=Derivation("ml-1m", lambda data, target: write_sequences(data, target), side=("movies.dat",)),
        ),
        DatasetSpec(
            "ml-1m-lgcn",
            "MovieLens-1M LightGCN train/test split (LCFN/BARS Movielens1M_m1; 6,022 users, 3,043 items)",
            layouts=(_LIGHTGCN,),
            sha256=_ML1M_LGCN_SHA,
            remote=_lightgcn_remote(*_RECZOO, "data/Movielens1M_m1", sha256=_ML1M_LGCN_SHA),
        ),
        DatasetSpec(
            "gowalla",
            "Gowalla check-ins, original LightGCN train/test split (29,858 users, 40,981 items)",
            layouts=(_LIGHTGCN,),
            sha256=_GOWALLA_SHA,
            remote=_lightgcn_remote("kuandeng/LightGCN", "b067ec05f16a24e0e1efe63cd82385f0c469af20",
                                    "Data/gowalla", sha256=_GOWALLA_SHA),
        ),
        DatasetSpec(
            "amazon-electronics",
            "Amazon Electronics, tiny LightGCN-format split (NBPO/BARS; 1,435 users, 1,522 items)",
            layouts=(_LIGHTGCN,),
            sha256=_ELECTRONICS_SHA,
            remote=_lightgcn_remote(*_RECZOO, "data/AmazonElectronics_m1", sha256=_ELECTRONICS_SHA),
        ),
        DatasetSpec(
            "amazon-book",
            "Amazon-Book, LightGCN train/test split (52,643 users, 91,599 items)",
            layouts=(_LIGHTGCN,),
            remote=_lightgcn_remote("kuandeng/LightGCN", "master", "Data/amazon-book", md5=_AMAZON_BOOK_MD5),
        ),
        DatasetSpec(
            "yelp2018",
            "Yelp2018, LightGCN train/test split (31,668 users, 38,048 items)",
            layouts=(_LIGHTGCN,),
            remote=_lightgcn_remote("kuandeng/LightGCN", "master", "Data/yelp2018", md5=_YELP2018_MD5),
        ),
        DatasetSpec(
            "beauty",
            "Amazon Beauty 5-core per-user chronological sequences (S3Rec/ICLRec; 22,363 users, 12,101 items)",
            layouts=(Layout(("Beauty.txt",), read_sequences),),
            sha256={"Beauty.txt": "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"},
            remote=(Remote(_github("salesforce/ICLRec", "2890e6c3ff6a22c6699fc19cb863b66786c1cde4", "data/Beauty.txt"),
                           "Beauty.txt",
                           sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"),),
        ),
        DatasetSpec(
            "lastfm",
            "LastFM hetrec2011 user-artist listens, LightGCN-PyTorch train/test split (1,892 users, 4,489 items)",
            layouts=(Layout(("data1.txt", "test1.txt"), read_lastfm),),
            sha256=_LASTFM_SHA,
            remote=tuple(
                Remote(_github("gusye1234/LightGCN-PyTorch", "947ca2b3b1d2d3545b114145710cb06c4e57b3d2",
                               f"data/lastfm/{f}"), f, sha256=sha)
                for f, sha in _LASTFM_SHA.items()
            ),
        ),
        # Generic formats for your own files: pass --path (a file, or a folder for the LightGCN pair).
        DatasetSpec(
            "sequences",
            "your own per-user chronological sequences, `user item item ...` oldest first (--path FILE)",
            layouts=(Layout(("sequences.txt",), read_sequences),),
            note="generic format: give the file with --path.",
        ),
        DatasetSpec(
            "lightgcn",
            "your own LightGCN/NGCF split, a folder with train.txt and test.txt (--path FOLDER)",
            layouts=(_LIGHTGCN,),
            note="generic format: give the folder with --path.",
        ),
        DatasetSpec(
            "table",
            "your own interaction table: CSV / TSV / Parquet / RecBole .inter, columns found by header "
            "(user_id/userId, item_id/movieId/asin, timestamp, rating) (--path FILE)",
            layouts=(Layout(("interactions.csv",), read_named_table),),
            note="generic format: give the file with --path; any suffix, the separator is guessed.",
        ),
        DatasetSpec(
            "movielens",
            "your own MovieLens-style ratings: ratings.dat (`::`) or u.data (tab) (--path FILE)",
            layouts=(Layout(("ratings.dat",), read_movielens_dat), Layout(("u.data",), read_ml100k)),
            note="generic format: give the file with --path.",
        ),
    )
}


I2I_MIN_COMMON = 20  # co-raters a pair needs: Pearson's r over 20 pairs has a null-hypothesis std of ~0.22


def _i2i(base: str) -> DatasetSpec:
    """Item-item relevance from ``base``'s ratings (``qrec.data.relevance``): MGQE's AAR analogue."""
    name = f"{base}-i2i"
    return DatasetSpec(
        name,
        f"item-item relevance from {base} ratings: 100 x Pearson r over >= {I2I_MIN_COMMON} co-raters, "
        "each item pair once, scores -100..100 (MGQE's AAR analogue; regression task)",
        layouts=(),
        computed=Computed(base, functools.partial(pearson_pairs, min_common=I2I_MIN_COMMON, orient_seed=0, name=name),
                        f"pearson-min{I2I_MIN_COMMON}-orient0-v1"),
        note=f"computed from {base}; its files are what is looked for.",
    )


for _spec_i2i in (_i2i("ml-100k"), _i2i("ml-1m")):
    DATASETS[_spec_i2i.name] = _spec_i2i


# Generated datasets: no files; the name (``base[:key=value,...]``) carries the generator's parameters.
GENERATED: dict[str, tuple[str, Callable[[str], Interactions]]] = {
    powerlaw.NAME: (
        "SYNTHETIC power-law log of any size with planted communities, for scale tests "
        "(synthetic-powerlaw:users=1e6,items=1e5,n=1e7,zipf=1.1,seed=0; see qrec.data.powerlaw)",
        powerlaw.powerlaw_interactions,
    ),
}


def list_datasets() -> dict[str, str]:
    """Every registered dataset name with a one-line description."""
    return {name: spec.description for name, spec in DATASETS.items()} | {k: v[0] for k, v in GENERATED.items()}


def _generator(name: str) -> Callable[[str], Interactions] | None:
    entry = GENERATED.get(name.partition(":")[0])
    return None if entry is None else entry[1]


@functools.lru_cache(maxsize=4)
def _generate(name: str) -> Interactions:
    data = _generator(name)(name)
    data.meta.update(dataset=name, source="generated")
    return data


def cache_dir() -> Path:
    """Where downloads go: ``$QREC_CACHE_DIR`` or ``~/.cache/qrec``."""
    return Path(os.environ.get("QREC_CACHE_DIR") or Path.home() / ".cache" / "qrec").expanduser()



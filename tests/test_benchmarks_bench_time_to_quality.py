"""``benchmarks/bench_time_to_quality.py``: its recipes, the found ones read from the presets that publish them."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_time_to_quality as bench  # noqa: E402
from qrec.experiments.presets import load_preset  # noqa: E402


@pytest.mark.parametrize("recipe", sorted(bench.PRESET_RECIPES))
def test_a_preset_recipe_trains_what_its_preset_publishes(recipe):
    teacher = load_preset(bench.PRESET_RECIPES[recipe]).configs(seeds=1)[0]
    cfg = bench.run_config("ml-1m-lgcn", recipe, seed=3, epochs=4, threads=1)
    assert cfg.model == teacher.model == "lightgcn"
    assert (cfg.dataset, cfg.seed, cfg.epochs, cfg.threads) == ("ml-1m-lgcn", 3, 4, 1)
    for key in ("batch_size", "lr", "lr_milestones", "lr_gamma", "model_options", "eval_every"):
        assert getattr(cfg, key) == getattr(teacher, key)


def test_the_table_recipe_is_the_l2_over_the_whole_table():
    options = bench.run_config("gowalla", "table", 0, 2, 1).model_options
    assert options["reg_scope"] == "table" and options["mask_hits"] is True
    assert "reg_scope" not in bench.run_config("gowalla", "fast", 0, 2, 1).model_options

"""The bundled presets are valid grids, and ``extends`` reuses a grid on another dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrec.compress.spec import parse_spec
from qrec.experiments.presets import load_preset, preset_names
from qrec.models.registry import model_names

PRESETS = preset_names()


@pytest.mark.parametrize("name", PRESETS)
def test_bundled_preset_is_a_valid_grid(name):
    preset = load_preset(name)
    configs = preset.configs()
    names = [c.run_name() for c in configs]
    assert configs and len(set(names)) == len(names), "two runs of the grid share a name"
    for c in configs:
        assert c.model in model_names()
        parse_spec(c.embedding)
        teacher = c.model_options.get("teacher")
        if teacher:  # a student's teacher is a run of the same preset, trained first
            assert Path(teacher).parent == Path("runs") / preset.name
            assert Path(teacher).name in names
    rows = {f"{c.model}|{c.embedding}" for c in configs}
    on_dataset = {f"{c.dataset}|{c.model}|{c.embedding}" for c in configs}  # a figure for one dataset's row
    assert set(preset.paper) <= rows | on_dataset, f"paper figures for rows the grid never runs: {set(preset.paper) - rows - on_dataset}"
    base_dim = preset.base.get("dim", 64)
    labelled = {f"{c.model}|{c.embedding}" + (f" d={c.dim}" if c.dim != base_dim else "")
                + (f" {c.options_tag()}" if c.options_tag() else "") for c in configs}  # the report's row labels
    assert not preset.reference or preset.reference in labelled
    if preset.claims:  # each claim names rows the grid runs on the claims' dataset
        claimed = [preset.claims["full"], preset.claims["sq"], *preset.claims["matched"]]
        assert {f"{preset.claims['dataset']}|{row}" for row in claimed} <= on_dataset
    assert {key.split("|")[0] for key in preset.anchors} <= {c.dataset for c in configs}


def test_an_extending_preset_runs_the_parent_grid_on_its_own_dataset():
    gowalla, yelp = load_preset("gcn-gowalla"), load_preset("gcn-yelp2018")
    assert yelp.base == gowalla.base | {"dataset": "yelp2018"}
    assert [c.run_name().replace("yelp2018", "gowalla") for c in yelp.configs()] == \
        [c.run_name() for c in gowalla.configs()]
    teachers = {c.model_options["teacher"] for c in yelp.configs() if "teacher" in c.model_options}
    assert teachers == {"runs/gcn-yelp2018/yelp2018-lightgcn-full-s0"}
    assert set(yelp.paper) == {"lightgcn|full"} and yelp.paper["lightgcn|full"]["recall@20"] == 6.49
    assert (yelp.metrics, yelp.reference) == (gowalla.metrics, gowalla.reference)


def test_extends_finds_a_parent_beside_the_file_and_refuses_a_cycle(tmp_path):
    (tmp_path / "parent.toml").write_text(
        '[base]\ndataset = "a"\nepochs = 3\n[[grid]]\nmodel = "gmf"\nseeds = 2\n'
        '[paper]\n"gmf|full" = { "hr@10" = 1.0 }\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "parent"\n[base]\ndataset = "b"\n')
    preset = load_preset(str(child))
    assert preset.name == "child" and preset.base == {"dataset": "b", "epochs": 3} and preset.paper == {}
    assert [c.run_name() for c in preset.configs()] == ["b-gmf-full-s0", "b-gmf-full-s1"]
    (tmp_path / "parent.toml").write_text('extends = "child"\n')
    with pytest.raises(ValueError, match="extends itself"):
        load_preset(str(child))


def test_on_dataset_is_an_extends_without_a_file():
    gowalla = load_preset("gcn-gowalla")
    moved = gowalla.on_dataset("yelp2018")
    extending = load_preset("gcn-yelp2018")
    assert moved.name == "gcn-gowalla-yelp2018" and moved.paper == {}
    assert [c.run_name() for c in moved.configs()] == [c.run_name() for c in extending.configs()]
    assert {c.model_options["teacher"] for c in moved.configs() if "teacher" in c.model_options} == \
        {"runs/gcn-gowalla-yelp2018/yelp2018-lightgcn-full-s0"}  # its own teacher, in its own folder
    on_file = load_preset("mgqe-table3").on_dataset("csv", "/data/clicks.csv")
    assert on_file.name == "mgqe-table3-clicks" and on_file.configs()[0].data_path == "/data/clicks.csv"
    assert on_file.command == "qrec experiment mgqe-table3 --dataset csv --path /data/clicks.csv"

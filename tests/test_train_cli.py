"""End to end on a small synthetic sequences file: train, exact resume, evaluate, export, recommend, grids."""

import json

import numpy as np
import pytest
import torch

from qrec.cli import main
from qrec.experiments.ptq import POPULARITY
from qrec.models.evaluate import evaluate_model
from qrec.models.registry import build_model
from qrec.train.config import RunConfig
from qrec.train.trainer import fit, load_trained


def _cfg(seq_file, **kw):
    base = dict(dataset="sequences", data_path=str(seq_file), model="gmf", epochs=3, batch_size=64, dim=8, threads=1)
    return RunConfig(**(base | kw))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("spec", ["full", "mgqe8x16/4@0.25"])
def test_interrupted_run_resumes_bit_for_bit(seq_file, tmp_path, spec):
    cfg = _cfg(seq_file, embedding=spec)
    straight = fit(cfg, tmp_path / "a", progress=False, log=lambda s: None)

    def stop_after_two(line):
        if line.startswith("epoch   2"):
            raise _Stop

    with pytest.raises(_Stop):
        fit(cfg, tmp_path / "b", progress=False, log=stop_after_two)
    resumed = fit(cfg, tmp_path / "b", progress=False, log=lambda s: None)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.test == straight.test
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_finished_run_extends_to_more_epochs_exactly(seq_file, tmp_path):
    straight = fit(_cfg(seq_file, epochs=3), tmp_path / "a", progress=False, log=lambda s: None)
    fit(_cfg(seq_file, epochs=2), tmp_path / "b", progress=False, log=lambda s: None)
    extended = fit(_cfg(seq_file, epochs=3, threads=2), tmp_path / "b", progress=False, log=lambda s: None)
    assert [h["loss"] for h in extended.history] == [h["loss"] for h in straight.history]
    assert extended.test == straight.test
    with pytest.raises(ValueError, match="already trained 3 epochs"):
        fit(_cfg(seq_file, epochs=2), tmp_path / "b", progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="different config"):
        fit(_cfg(seq_file, epochs=3, lr=0.5), tmp_path / "b", progress=False, log=lambda s: None)


def test_a_step_schedule_trains_at_the_decayed_lr_and_extends_exactly(seq_file, tmp_path):
    """Milestones are absolute epochs: a 2-epoch run extended to 3 replays the straight run's decay at epoch 2."""
    stepped = dict(lr=0.01, lr_milestones=[2], lr_gamma=0.1)
    straight = fit(_cfg(seq_file, **stepped), tmp_path / "a", progress=False, log=lambda s: None)
    fit(_cfg(seq_file, epochs=2, **stepped), tmp_path / "b", progress=False, log=lambda s: None)
    extended = fit(_cfg(seq_file, **stepped), tmp_path / "b", progress=False, log=lambda s: None)
    assert [h["loss"] for h in extended.history] == [h["loss"] for h in straight.history]
    flat = fit(_cfg(seq_file, lr=0.01), None, progress=False, log=lambda s: None)
    assert [h["loss"] for h in flat.history[:2]] == [h["loss"] for h in straight.history[:2]]
    assert flat.history[2]["loss"] != straight.history[2]["loss"]
    saved = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    # a run trained 2 epochs without a schedule takes one from epoch 2 on, exactly; not one that changes its past
    fit(_cfg(seq_file, epochs=2, lr=0.01), tmp_path / "c", progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="different config"):
        fit(_cfg(seq_file, lr=0.01, lr_milestones=[1]), tmp_path / "c", progress=False, log=lambda s: None)
    decayed = fit(_cfg(seq_file, **stepped), tmp_path / "c", progress=False, log=lambda s: None)
    assert [h["loss"] for h in decayed.history] == [h["loss"] for h in straight.history]


def test_a_damaged_checkpoint_stops_the_run_naming_it_and_is_kept(seq_file, tmp_path):
    from qrec.errors import QrecError

    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(QrecError, match=f"{ckpt}: not a readable qrec checkpoint"):
        fit(_cfg(seq_file, epochs=1), ckpt.parent, progress=False, log=lambda s: None)
    assert ckpt.read_bytes() == b"not a checkpoint"


def test_same_seed_same_numbers_other_seed_differs(seq_file, tmp_path):
    a = fit(_cfg(seq_file, epochs=2), None, progress=False, log=lambda s: None)
    b = fit(_cfg(seq_file, epochs=2), None, progress=False, log=lambda s: None)
    c = fit(_cfg(seq_file, epochs=2, seed=1), None, progress=False, log=lambda s: None)
    assert a.history[-1]["loss"] == b.history[-1]["loss"] and a.test == b.test
    assert a.history[-1]["loss"] != c.history[-1]["loss"]


def test_cli_train_evaluate_export_recommend(seq_file, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--dataset", "sequences", "--path", str(seq_file), "--model", "neumf", "--embedding", "dpq8x16c",
            "--dim", "8", "--epochs", "2", "--batch-size", "64", "--threads", "1"]
    assert main(["train", *args, "--out", str(run), "--quiet"]) == 0
    record = json.loads((run / "record.json").read_text())
    for key in ("dataset", "protocol", "model", "embedding", "seed", "metrics", "size", "git_commit", "command", "date", "train_seconds"):
        assert key in record
    assert record["protocol"] == "leave-one-out" and 0 < record["size"]["relative"] < 1

    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"] == pytest.approx(record["metrics"]["test"])
    assert main(["evaluate", str(run), "--mask", "none", "--json"]) == 0  # nothing masked: seen items compete
    unmasked = json.loads(capsys.readouterr().out)
    assert unmasked["mask"] == "none" and unmasked["metrics"]["users"] == evaluated["metrics"]["users"]

    artifact = tmp_path / "model.safetensors"
    assert main(["export", str(run), str(artifact)]) == 0
    from qrec.export.artifact import read_manifest

    assert read_manifest(artifact)["serving_bits"] == record["size"]["serving_bits"]
    capsys.readouterr()
    assert main(["evaluate", str(artifact), "--json"]) == 0  # the model as served (codes), on the same test users
    served = json.loads(capsys.readouterr().out)
    assert served["metrics"] == pytest.approx(evaluated["metrics"], abs=1e-9)
    assert served["serving_bits"] == record["size"]["serving_bits"]
    assert main(["evaluate", str(artifact), "--last"]) == 2  # an artifact holds one model
    capsys.readouterr()
    assert main(["recommend", str(artifact), "--user", "1", "7", "--k", "5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["user"] for x in lines] == ["1", "7"] and all(len(x["items"]) == 5 for x in lines)
    seen_by_1 = set(map(int, seq_file.read_text().splitlines()[0].split()[1:-2]))  # user 1's training items
    assert not seen_by_1 & set(lines[0]["items"])


def test_a_gpu_trained_checkpoint_evaluates_and_exports_without_a_gpu(seq_file, tmp_path, capsys):
    """The checkpoint's config says cuda; on a machine without CUDA it loads on the CPU instead of failing."""
    from qrec.train.trainer import CHECKPOINT, load_trained

    fit(_cfg(seq_file, epochs=1), tmp_path / "run", progress=False, log=lambda s: None)
    ckpt = tmp_path / "run" / CHECKPOINT
    saved = torch.load(ckpt, weights_only=True)
    saved["config"]["device"] = "cuda"
    torch.save(saved, ckpt)
    model, cfg, _ = load_trained(tmp_path / "run")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert cfg.device == want and next(model.parameters()).device.type == want
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "m.safetensors")]) == 0


@pytest.mark.parametrize("model, spec", [("gmf", "sq4"), ("gmf", "mgqe4x16/4@0.25"), ("gmf", "dpq2x16c"),
                                         ("neumf", "mgqe-ud4/2x16@0.25")])
def test_exported_model_scores_like_the_trained_one(seq_file, tmp_path, model, spec):
    """DPQ / MGQE tables are served as codes (scored from them), the others decoded: same scores either way."""
    from qrec.compress.coded import CodedEmbedding
    from qrec.export.artifact import export_model, load_model, serving_data

    res = fit(_cfg(seq_file, model=model, embedding=spec, epochs=1), None, progress=False, log=lambda s: None)
    export_model(res.model, res.config.to_dict(), tmp_path / "m.safetensors", serving_data(res.split))
    served, _ = load_model(tmp_path / "m.safetensors")
    coded = [isinstance(t, CodedEmbedding) for t in served.embedding_tables().values()]
    assert coded and all(coded) == (not spec.startswith("sq"))
    users = torch.arange(res.split.n_users)
    with torch.no_grad():
        torch.testing.assert_close(served.score_all(users), res.model.eval().score_all(users), rtol=1e-5, atol=1e-6)
        pairs = [t.reshape(-1) for t in torch.meshgrid(users[:4], torch.arange(res.split.n_items), indexing="ij")]
        torch.testing.assert_close(served.score(*pairs), res.model.score(*pairs), rtol=1e-5, atol=1e-6)
    seen = res.split.train.to_csr()  # recommendations: coded tables keep a running top-k over their codes
    (top, val), (ref_top, ref_val) = served.topk(users, 5, exclude=seen), res.model.topk(users, 5, exclude=seen)
    torch.testing.assert_close(val, ref_val, rtol=1e-5, atol=1e-6)
    assert (top == ref_top).float().mean() > 0.99  # the same items but for float near-ties


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    bad = tmp_path / "sequences.txt"
    bad.write_text("1 10 11 12\n1 13 14\n")  # user 1 twice
    assert main(["train", "--dataset", "sequences", "--path", str(bad), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sequences.txt" in err and "line 2" in err and "Traceback" not in err
    assert main(["train", "--embedding", "dpq7x300", "--dataset", "sequences", "--path", str(bad)]) == 2


def _gmf_preset(folder, name: str, seq_file, epochs: int, embeddings: list[str], extra: str = ""):
    """A two-seed GMF grid over ``embeddings`` on the synthetic sequences, written to ``folder/<name>.toml``."""
    path = folder / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
description = "{name} grid"
protocol_note = "synthetic"
[base]
dataset = "sequences"
data_path = "{seq_file}"
epochs = {epochs}
batch_size = 64
dim = 8
[[grid]]
model = ["gmf"]
embedding = {json.dumps(embeddings)}
seeds = 2
""" + extra)
    return path


def test_experiment_grid_resumes_and_reports(seq_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    preset = _gmf_preset(tmp_path, "tiny", seq_file, epochs=1, embeddings=["full", "sq2"],
                         extra='[paper]\n"gmf|full" = { "hr@10" = 7.79, "ndcg@10" = 3.88, size = 100.0 }\n')
    assert main(["experiment", str(preset), "--max-runs", "3", "--threads", "1"]) == 0
    assert len(list((tmp_path / "results" / "tiny").glob("*.json"))) == 3
    capsys.readouterr()
    assert main(["experiment", str(preset), "--dry-run"]) == 0  # the one left, estimated from its finished seed
    name, progress, estimate = capsys.readouterr().out.strip().split("\t")
    assert name == "sequences-gmf-sq2-d8-s1" and progress == "not started" and "(median of 1 finished seed(s))" in estimate
    assert main(["experiment", str(preset), "--threads", "1"]) == 0
    assert len(list((tmp_path / "results" / "tiny").glob("*.json"))) == 4
    capsys.readouterr()
    assert main(["experiment", str(preset), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == ""  # nothing left to run
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## tiny" in text and "| sequences | gmf | `full` | 2 |" in text and "7.79" in text
    # a seed trained on a GPU joins its row, counted apart; its epoch time is not mixed into the CPU's
    path = tmp_path / "results" / "tiny" / "sequences-gmf-full-d8-s1.json"
    record = json.loads(path.read_text())
    record["config"]["device"] = "cuda"
    record["history"][0]["seconds"] = 1e6
    path.write_text(json.dumps(record))
    (tmp_path / "results" / "SUMMARY.md").write_text("## At a glance\nhand-written\n")
    assert main(["report"]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.index("## At a glance\nhand-written") < text.index("## tiny")  # the summary leads
    row = next(line for line in (tmp_path / "RESULTS.md").read_text().splitlines() if "| `full` |" in line)
    assert "| 2 (1 cuda) |" in row and "1000000.0" not in row


def test_parallel_grid_gives_the_records_of_a_sequential_one(seq_file, tmp_path, monkeypatch):
    """``--jobs 2``: runs train in two worker processes, each logging to its run folder; every record holds
    the numbers the one-process grid gets (CPU runs are deterministic given the config)."""
    preset = _gmf_preset(tmp_path, "par", seq_file, epochs=2, embeddings=["full", "mgqe8x16/4@0.25"])
    records = {}
    for jobs in (1, 2):
        work = tmp_path / f"jobs{jobs}"
        work.mkdir()
        monkeypatch.chdir(work)
        assert main(["experiment", str(preset), "--threads", "1", "--jobs", str(jobs)]) == 0
        records[jobs] = {p.name: json.loads(p.read_text()) for p in (work / "results" / "par").glob("*.json")}
    assert len(records[2]) == 4 and records[1].keys() == records[2].keys()
    for name, rec in records[1].items():
        other = records[2][name]
        assert rec["metrics"] == other["metrics"], name
        assert [h["loss"] for h in rec["history"]] == [h["loss"] for h in other["history"]], name
    assert all((tmp_path / "jobs2" / "runs" / "par" / n.removesuffix(".json") / "train.log").stat().st_size > 0
               for n in records[2])


def test_parallel_grid_reports_a_failed_run_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "bad.toml"
    preset.write_text(f"""
name = "bad"
description = "a run whose data file is missing"
protocol_note = "none"
[base]
dataset = "sequences"
data_path = "{tmp_path / 'missing.txt'}"
epochs = 1
[[grid]]
model = ["gmf"]
seeds = 2
""")
    assert main(["experiment", str(preset), "--jobs", "2", "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("FAILED") == 2 and "missing.txt" in err and "sequences-gmf-full-s1" in err


def test_grid_over_d_names_runs_apart_and_sizes_against_the_preset_d(seq_file, tmp_path, monkeypatch):
    """A grid over ``dim`` (MGQE Fig. 6) gives distinct runs; sizes compare with the full model at the preset's d."""
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "dims.toml"
    preset.write_text(f"""
name = "dims"
[base]
dataset = "sequences"
data_path = "{seq_file}"
epochs = 1
batch_size = 64
dim = 16
[[grid]]
model = "gmf"
dim = [8, 16]
""")
    assert main(["experiment", str(preset), "--threads", "1"]) == 0
    names = sorted(p.name for p in (tmp_path / "results" / "dims").glob("*.json"))
    assert names == ["sequences-gmf-full-d16-s0.json", "sequences-gmf-full-d8-s0.json"]
    text = (tmp_path / "RESULTS.md").read_text()
    row = next(line for line in text.splitlines() if "`full d=8`" in line)
    assert "| 50.0% |" in row.replace("| 50.1% |", "| 50.0% |")  # GMF's d -> 1 output layer: ~half
    assert "| sequences | gmf | `full` | 1 |" in text and "| 100.0% |" in text


def test_gcn_grid_with_model_option_variants_reports_and_plots(graph_dir, tmp_path, monkeypatch, capsys):
    """The GCN backbones run through the registry, trainer and runner; model options name distinct runs."""
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "gcn-tiny.toml"
    preset.write_text(f"""
name = "gcn-tiny"
description = "tiny GCN grid"
protocol_note = "planted communities"
metrics = ["recall@20", "ndcg@20"]
reference = "lightgcn|full"
[base]
dataset = "lightgcn"
data_path = "{graph_dir}"
protocol = "given"
epochs = 2
batch_size = 64
lr = 0.01
dim = 64
ks = [20]
select_metric = "ndcg@20"
[[grid]]
model = ["lightgcn", "binary-gcn"]
[[grid]]
model = "lowbit-gcn"
model_options = [{{ bits = 2, estimator = "ste" }}, {{ bits = 2, estimator = "ewgs", delta_every = 1 }}]
""")
    assert main(["experiment", str(preset), "--threads", "1"]) == 0
    names = sorted(p.name for p in (tmp_path / "results" / "gcn-tiny").glob("*.json"))
    assert names == ["lightgcn-binary-gcn-full-s0.json", "lightgcn-lightgcn-full-s0.json",
                     "lightgcn-lowbit-gcn-full-bits2-delta_every1-estimatorewgs-s0.json",
                     "lightgcn-lowbit-gcn-full-bits2-estimatorste-s0.json"]
    record = json.loads((tmp_path / "results" / "gcn-tiny" / names[0]).read_text())
    # 1-bit GCN serving: (L + 1) layers x (64 sign bits + a float32 scale) per node, against 64 float32
    assert record["size"]["relative"] == pytest.approx(4 * (64 + 32) / (64 * 32), rel=1e-3)
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert all("recall@20" in h["test_curve"] for h in record["history"])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "`full bits=2,delta_every=1,estimator=ewgs`" in text and "`full bits=2,estimator=ste`" in text
    assert "recall@20 vs lightgcn full" in text and "| 100.0% |" in text
    ewgs = json.loads((tmp_path / "results" / "gcn-tiny" / names[2]).read_text())
    assert len(ewgs["diagnostics"]["delta_history"]) >= 2  # delta_every = 1: one update per step
    assert main(["plot", "--output", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "gcn-tiny.png").stat().st_size > 0


def test_cli_model_options_and_unknown_option_error(graph_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "lightgcn", "--path", str(graph_dir), "--protocol", "given", "--model", "lowbit-gcn",
            "--epochs", "1", "--dim", "16", "--k", "20", "--threads", "1", "--out", str(out), "--quiet"]
    assert main(args + ["--option", "bits=4", "--option", "estimator=ste"]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["model_options"] == {"bits": 4, "estimator": "ste"}
    assert "recall@20" in record["metrics"]["test"]
    capsys.readouterr()
    assert main(args + ["--option", "bitz=4"]) != 0
    err = capsys.readouterr().err
    assert "lowbit-gcn" in err and "bitz" in err and "Traceback" not in err


@pytest.mark.parametrize("model, options, ratio", [
    ("lightgcn", {}, 1.0),
    ("binary-gcn", {}, 4 * (64 + 32) / (64 * 32)),
    ("lowbit-gcn", {}, (2 * 64 + 32) / (64 * 32)),  # the default width, recorded by the artifact
    ("lowbit-gcn", {"bits": 8}, (8 * 64 + 32) / (64 * 32)),
    ("lowbit-gcn", {"bits": 1, "rotation": "itq"}, (64 + 32) / (64 * 32)),
])
def test_graph_model_artifact_scores_from_its_codes(graph_dir, tmp_path, model, options, ratio):
    """A GCN's artifact holds its final embeddings' codes (not layer-0 tables) and scores like the model."""
    from qrec.export.artifact import export_model, load_model, serving_data
    from qrec.models.served import ServedScorer

    cfg = RunConfig(dataset="lightgcn", data_path=str(graph_dir), protocol="given", model=model, epochs=1,
                    batch_size=64, dim=64, ks=(20,), select_metric="ndcg@20", model_options=options, threads=1)
    res = fit(cfg, None, progress=False, log=lambda s: None)
    manifest = export_model(res.model, cfg.to_dict(), tmp_path / "m.safetensors", serving_data(res.split))
    assert manifest["serving_bits"] == res.model.serving_bits()
    assert manifest["serving_bits"] / manifest["full_bits"] == pytest.approx(ratio)
    served, _ = load_model(tmp_path / "m.safetensors")
    assert isinstance(served, ServedScorer) and not any(True for _ in served.parameters())
    users = torch.arange(res.split.n_users)
    with torch.no_grad():
        expected = res.model.eval().score_all(users)
        torch.testing.assert_close(served.score_all(users), expected, rtol=1e-5, atol=1e-5)
        items = torch.arange(res.split.n_items)
        torch.testing.assert_close(served.score(users[:5, None], items[None, :]), expected[:5], rtol=1e-4, atol=1e-4)
    # top-k with the seen items masked: sign codes take the fused popcount kernel, the same items as the
    # generic score-then-rank path of the base class
    seen = res.split.train.to_csr()
    top, val = served.topk(users, 10, exclude=seen)
    ref_top, ref_val = super(type(served), served).topk(users, 10, exclude=seen)
    assert torch.equal(top, ref_top)
    torch.testing.assert_close(val, ref_val, rtol=1e-5, atol=1e-5)


def test_student_starts_from_a_lightgcn_teacher_run(graph_dir, tmp_path):
    """``teacher=<run>``: the 1-bit and b-bit GCNs start from the teacher's layer-0 tables; the 1-bit one
    also distils the teacher's top items. A non-LightGCN teacher is a clear error."""
    from qrec.errors import SpecError
    from qrec.train.trainer import build

    base = dict(dataset="lightgcn", data_path=str(graph_dir), protocol="given", epochs=1, batch_size=64, dim=16,
                ks=(20,), select_metric="ndcg@20", threads=1)
    teacher = fit(RunConfig(model="lightgcn", **base), tmp_path / "teacher", progress=False, log=lambda s: None)
    for model, extra in (("binary-gcn", {}), ("lowbit-gcn", {"bits": 2})):
        cfg = RunConfig(model=model, model_options={"teacher": str(tmp_path / "teacher")} | extra, **base)
        student = build(cfg, teacher.split)
        assert torch.equal(student.user_table.weight, teacher.model.user_table.weight)
        assert torch.equal(student.item_table.weight, teacher.model.item_table.weight)
        if model == "binary-gcn":
            assert student.kd_top.shape[0] == teacher.split.n_users
    fit(RunConfig(model="binary-gcn", **base), tmp_path / "binary", progress=False, log=lambda s: None)
    with pytest.raises(SpecError, match="lightgcn"):
        build(RunConfig(model="lowbit-gcn", model_options={"teacher": str(tmp_path / "binary")}, **base), teacher.split)


def test_grid_retrains_a_missing_teacher_checkpoint(graph_dir, tmp_path, monkeypatch):
    """On a fresh clone the teacher's record exists but not its checkpoint: the runner retrains it first."""
    import shutil

    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "kd.toml"
    preset.write_text(f"""
name = "kd"
[base]
dataset = "lightgcn"
data_path = "{graph_dir}"
protocol = "given"
epochs = 1
batch_size = 64
dim = 16
ks = [20]
select_metric = "ndcg@20"
[[grid]]
model = "lightgcn"
[[grid]]
model = "binary-gcn"
model_options = [{{ teacher = "runs/kd/lightgcn-lightgcn-full-d16-s0" }}]
""")
    assert main(["experiment", str(preset), "--threads", "1"]) == 0
    student = tmp_path / "results" / "kd" / "lightgcn-binary-gcn-full-d16-teacherlightgcn-lightgcn-full-d16-s0-s0.json"
    first = json.loads(student.read_text())["metrics"]["test"]
    shutil.rmtree(tmp_path / "runs")
    student.unlink()
    assert main(["experiment", str(preset), "--threads", "1"]) == 0
    assert json.loads(student.read_text())["metrics"]["test"] == first  # same teacher, same student


def test_ptq_table_of_a_trained_lightgcn(graph_dir, tmp_path, capsys):
    out = tmp_path / "lgcn"
    assert main(["train", "--dataset", "lightgcn", "--path", str(graph_dir), "--protocol", "given", "--model", "lightgcn",
                 "--epochs", "2", "--dim", "16", "--k", "20", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["ptq", str(out), "--bits", "1", "2"]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| ") and "codes" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == [
        "float32 (the trained LightGCN)", "1-bit final embedding", "1-bit final embedding, ITQ rotation",
        "1-bit final embedding, ITQ rotation, angular scores",
        "2-bit final embedding", "2-bit final embedding, ITQ rotation", "1-bit per layer (BiGeaR layer weights)",
        POPULARITY]
    assert rows[0].endswith("| 100.0% | 100.0% |")
    assert all("| 9.4% |" in r for r in rows[1:4])  # (16 + 32) / (16 x 32) bits: 16 sign bits + a float32 step
    binary = tmp_path / "bgcn"
    assert main(["train", "--dataset", "lightgcn", "--path", str(graph_dir), "--protocol", "given", "--model", "binary-gcn",
                 "--epochs", "1", "--dim", "16", "--k", "20", "--threads", "1", "--out", str(binary), "--quiet"]) == 0
    assert main(["ptq", str(binary)]) == 2  # not a float lightgcn run: a clear error
    assert "lightgcn" in capsys.readouterr().err


def test_ptq_table_of_a_trained_gmf(seq_file, tmp_path, capsys):
    out = tmp_path / "gmf"
    assert main(["train", "--dataset", "sequences", "--path", str(seq_file), "--model", "gmf", "--epochs", "2",
                 "--dim", "8", "--batch-size", "64", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    records = tmp_path / "ptq-records"
    assert main(["ptq", str(out), "--bits", "8", "1", "--specs", "lr2", "dpq8x4c", "mgqe4x4/2@0.5", "--records",
                 str(records)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "codes" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == [
        "float32 (the trained gmf)", "sq8-ptq", "sq1-ptq", "q8", "q1", "lr2", "dpq8x4c", "mgqe4x4/2@0.5", POPULARITY]
    assert rows[0].endswith("| 100.0% | 100.0% |")
    _, _, split = load_trained(out)  # the floor: the popularity model of the run's training data, as evaluated alone
    pop = evaluate_model(build_model("pop", split, "full", "full", 1), split, "test", (10,))
    assert rows[-1].startswith(f"| {POPULARITY} | {100 * pop['hr@10']:.2f} | {100 * pop['ndcg@10']:.2f} | ")
    floor = [json.loads(f.read_text()) for f in records.glob("*popularity*.json")]
    assert len(floor) == 1 and floor[0]["family"] == "popularity" and floor[0]["size"]["dense_bits"] == 0
    assert main(["report", "--results", str(records), "--output", str(tmp_path / "R.md")]) == 0
    hr = [float(r.split(" | ")[1]) for r in rows]
    assert abs(hr[1] - hr[0]) <= abs(hr[2] - hr[0]) + 1e-9  # 8 bits hold the float model at least as well as 1
    mgqe = tmp_path / "mgqe"
    assert main(["train", "--dataset", "sequences", "--path", str(seq_file), "--model", "gmf", "--epochs", "1",
                 "--dim", "8", "--embedding", "dpq8x4c", "--threads", "1", "--out", str(mgqe), "--quiet"]) == 0
    assert main(["ptq", str(mgqe)]) == 2  # already compressed: a clear error
    assert "full tables" in capsys.readouterr().err


def test_a_bundled_grid_runs_on_another_dataset(seq_file, tmp_path, monkeypatch, capsys):
    """``qrec experiment <preset> --dataset --path``: the paper's grid on a user's file, reported apart."""
    monkeypatch.chdir(tmp_path)
    args = ["experiment", "mgqe-table3", "--dataset", "sequences", "--path", str(seq_file), "--threads", "1"]
    assert main([*args, "--only", "gmf-full-s0", "--max-runs", "1"]) == 0
    (record_file,) = (tmp_path / "results" / "mgqe-table3-sequences").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record_file.name == "sequences-gmf-full-s0.json" and record["config"]["data_path"] == str(seq_file)
    assert record["config"]["epochs"] == 20 and record["config"]["min_count"] == 5  # the preset's protocol
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    assert "sequences-gmf-full-s0" not in capsys.readouterr().out.split()  # finished: skipped
    assert main(["report"]) == 0
    section = (tmp_path / "RESULTS.md").read_text().split("## mgqe-table3-sequences")[1]
    assert f"`qrec experiment mgqe-table3 --dataset sequences --path {seq_file}`" in section
    assert "paper hr@10" not in section.split("\n## ")[0]  # the paper's figures are for ML-1M only
    assert main(["experiment", "mgqe-table3", "--path", str(seq_file)]) == 2  # --path alone: which format?
    assert "--path needs --dataset" in capsys.readouterr().err


def test_identical_runs_are_shared_between_presets_even_mid_grid(seq_file, tmp_path, monkeypatch):
    """A run another preset has finished is copied, not retrained: at the grid's start, and also when the
    other grid finishes it while this one is running (two grids side by side share rows)."""
    from qrec.experiments.presets import load_preset
    from qrec.experiments.runner import _train_and_record

    monkeypatch.chdir(tmp_path)
    for name in ("first", "second", "third"):
        _gmf_preset(tmp_path, name, seq_file, epochs=1, embeddings=["full"])
    assert main(["experiment", str(tmp_path / "first.toml"), "--threads", "1"]) == 0
    assert main(["experiment", str(tmp_path / "second.toml"), "--threads", "1"]) == 0
    for seed in (0, 1):
        copied = json.loads((tmp_path / "results" / "second" / f"sequences-gmf-full-d8-s{seed}.json").read_text())
        assert copied["preset"] == "second" and copied["shared_from"].endswith(f"first/sequences-gmf-full-d8-s{seed}.json")
    assert not (tmp_path / "runs" / "second").exists()  # nothing trained
    cfg = load_preset(str(tmp_path / "third.toml")).configs()[0]  # as if "first" finished it after "third" started
    record = _train_and_record(cfg, tmp_path / "results", {"preset": "third", "preset_file": None})
    assert record["shared_from"].endswith("first/sequences-gmf-full-d8-s0.json")
    assert (tmp_path / "results" / "third" / "sequences-gmf-full-d8-s0.json").exists()
    assert not (tmp_path / "runs" / "third").exists()


def test_cli_codes_compares_genres_of_trained_runs(seq_file, tmp_path, capsys):
    """``qrec codes`` (Fig. 8) on trained runs: a table and a heatmap, genres read from the movies.dat beside
    the data (or ``--genres``); a float table has no codes to compare."""
    data = tmp_path / "sequences.txt"
    data.write_text(seq_file.read_text())
    names = ["Sci-Fi", "Romance", "Animation", "Horror"]
    (tmp_path / "movies.dat").write_text("".join(f"{1000 + i}::Movie {i} (1999)::{names[i % 4]}|Drama\n" for i in range(60)))
    runs = []
    for spec in ("mgqe8x16/4@0.25", "sq2-ptq", "full"):
        runs.append(tmp_path / spec.replace("/", "_"))
        fit(_cfg(data, embedding=spec, epochs=1), runs[-1], progress=False)
    capsys.readouterr()
    png = tmp_path / "fig8.png"
    assert main(["codes", str(runs[0]), str(runs[1]), "--per-set", "3", "--output", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.count("separation") == 2 and "| Horror |" in out and png.stat().st_size > 0
    one = tmp_path / "one" / "fig8.png"  # a single run's narrow panel: title wrapped, folder created
    assert main(["codes", str(runs[0]), "--genres", str(tmp_path / "movies.dat"), "--per-set", "3", "--output", str(one)]) == 0
    assert capsys.readouterr().out.split("\n\n")[0] == out.split("\n\n")[0]  # the same first table
    assert one.stat().st_size > 0
    assert main(["codes", str(runs[2])]) == 2
    assert "needs a model with an item table of codes" in capsys.readouterr().err


def test_a_grid_into_another_results_folder_reports_there(seq_file, tmp_path, monkeypatch):
    """Retraining a committed grid elsewhere (e.g. for its checkpoints) leaves the repository's RESULTS.md alone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RESULTS.md").write_text("ours\n")
    preset = _gmf_preset(tmp_path, "tiny", seq_file, epochs=1, embeddings=["full"])
    assert main(["experiment", str(preset), "--results", "elsewhere", "--max-runs", "1", "--threads", "1"]) == 0
    assert (tmp_path / "RESULTS.md").read_text() == "ours\n"
    assert "## tiny" in (tmp_path / "elsewhere" / "RESULTS.md").read_text()


def test_regression_grid_reports_rmse_the_claims_and_plots(ratings_file, tmp_path, monkeypatch, capsys):
    """A Table 5 style grid: records hold RMSE / MAE, the report prints them on the data's scale with the
    paper's column and answers the claims, ``qrec plot`` draws the regression panel, ``qrec train`` and
    ``qrec evaluate`` run the task."""
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "tiny5.toml"
    preset.write_text(f"""
name = "tiny5"
description = "tiny table 5"
protocol_note = "synthetic"
metrics = ["rmse", "mae"]
reference = "gmf|full"
[base]
task = "regression"
data_path = "{ratings_file}"
select_metric = "rmse"
epochs = 2
batch_size = 64
dim = 8
lr = 0.01
[[grid]]
dataset = "movielens"
protocol = "kfold-5"
l2 = 0.01
model = "gmf"
embedding = ["full", "sq8-ptq", "dpq4x16c", "mgqe4x16/4@0.2"]
seeds = 2
[paper]
"movielens|gmf|full" = {{ rmse = 30.34, size = 100.0 }}
[claims]
dataset = "movielens"
full = "gmf|full"
sq = "gmf|sq8-ptq"
matched = ["gmf|dpq4x16c", "gmf|mgqe4x16/4@0.2"]
smallest = "mgqe"
""")
    assert main(["experiment", str(preset), "--threads", "1"]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "tiny5").glob("*.json")]
    assert len(records) == 8 and all({"rmse", "mae"} <= set(r["metrics"]["test"]) for r in records)
    report = (tmp_path / "RESULTS.md").read_text()
    row = next(line for line in report.splitlines() if "| `full` |" in line)
    mean = np.mean([r["metrics"]["test"]["rmse"] for r in records if r["embedding"]["item"] == "full"])
    assert f"{mean:.3f} ±" in row and "30.34" in row
    assert "Claims of MGQE's section 5.6.3 on movielens" in report
    assert report.count("**yes**") + report.count("**no**") == 3
    capsys.readouterr()
    assert main(["plot", "--output", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "tiny5-size.png").stat().st_size > 0  # Fig. 6's regression panel: RMSE / MAE vs size
    capsys.readouterr()
    assert main(["train", "--task", "regression", "--dataset", "movielens", "--path", str(ratings_file),
                 "--protocol", "holdout", "--epochs", "1", "--dim", "8", "--l2", "0.01", "--quiet", "--threads", "1"]) == 0
    assert "test rmse" in capsys.readouterr().out
    assert main(["evaluate", "runs/movielens-gmf-full-d8-s0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["pairs"] > 0
    assert main(["evaluate", "runs/movielens-gmf-full-d8-s0"]) == 0
    assert "scored pairs: RMSE" in capsys.readouterr().out


def test_a_relative_data_path_is_stored_absolute_and_the_run_works_from_elsewhere(seq_file, tmp_path, monkeypatch,
                                                                                   capsys):
    from qrec.train.checkpoint import load_checkpoint, save_checkpoint

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    (here / "data").mkdir(parents=True)
    elsewhere.mkdir()
    (here / "data" / "s.txt").write_text(seq_file.read_text())
    args = ["--dataset", "sequences", "--model", "gmf", "--dim", "8", "--batch-size", "64", "--threads", "1", "-q"]
    monkeypatch.chdir(here)
    assert main(["train", *args, "--path", "data/s.txt", "--epochs", "1", "--out", "run"]) == 0
    ckpt = here / "run" / "checkpoint.pt"
    assert load_checkpoint(ckpt)["config"]["data_path"] == str(here / "data" / "s.txt")
    record = json.loads((here / "run" / "record.json").read_text())
    assert record["config"]["data_path"] == str(here / "data" / "s.txt")

    monkeypatch.chdir(elsewhere)  # evaluate, and resume with the path as typed from here: the same run
    capsys.readouterr()
    assert main(["evaluate", str(here / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(record["metrics"]["test"])
    assert main(["train", *args, "--path", "../here/data/s.txt", "--epochs", "2", "--out", str(here / "run")]) == 0
    assert load_checkpoint(ckpt)["state"]["epoch"] == 2

    saved = load_checkpoint(ckpt)  # a checkpoint from before: its path as typed, relative to where it was trained
    saved["config"]["data_path"] = "data/s.txt"
    save_checkpoint(ckpt, saved)
    monkeypatch.chdir(here)
    assert main(["evaluate", "run", "--json"]) == 0
    assert main(["train", *args, "--path", "data/s.txt", "--epochs", "3", "--out", "run"]) == 0  # resumes
    assert load_checkpoint(ckpt)["state"]["epoch"] == 3


def test_cli_train_sums_or_drops_repeated_pairs_only_when_asked(tmp_path, capsys):
    data = tmp_path / "dup.csv"
    data.write_text("user,item\n" + "".join(f"{u},{i}\n" for u in range(20) for i in range(u % 5, u % 5 + 12))
                    + "3,5\n")
    args = ["train", "--dataset", "table", "--path", str(data), "--model", "pop", "--epochs", "1", "-q"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert f"{data}, line 242: duplicate interaction (user 3, item 5); first given on line 40" in capsys.readouterr().err
    for how in ("sum", "drop"):
        assert main([*args, "--duplicates", how, "--out", str(tmp_path / how)]) == 0
        assert json.loads((tmp_path / how / "record.json").read_text())["config"]["duplicates"] == how


def test_a_grid_on_a_file_with_repeated_pairs_reads_them_as_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    rows = [(u, i, t) for u in range(40) for t, i in enumerate(rng.choice(50, 15, replace=False))]
    (tmp_path / "dup.csv").write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
                                      + f"{rows[0][0]},{rows[0][1]},99\n")
    args = ["experiment", "mgqe-table3", "--dataset", "table", "--path", "dup.csv", "--only", "gmf-full-s0",
            "--max-runs", "1", "--threads", "1"]
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0  # the plan names why it cannot estimate the run
    assert "line 602: duplicate interaction (user 0, item 10); first given on line 2" in capsys.readouterr().out
    assert main([*args, "--duplicates", "drop"]) == 0
    (record_file,) = (tmp_path / "results" / "mgqe-table3-dup").glob("*.json")
    config = json.loads(record_file.read_text())["config"]
    assert config["duplicates"] == "drop" and config["data_path"] == str(tmp_path / "dup.csv")

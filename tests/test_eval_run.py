"""End to end: a tiny random ELECTRA fine-tuned a few steps on every task, reports, bad input, s3://."""

import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from common import manifest, storage
from evaluation import run as eval_run
from evaluation.config import EvalConfig, FinetuneConfig, ReportConfig
from evaluation.glue_data import DataFormatError
from evaluation.model_io import ModelError
from evaluation.report import history
from evaluation.tasks import TaskError, TASKS

DATA = Path(__file__).parent / "data"
# A few optimizer steps on a few examples: enough to exercise every code path on 2 CPU cores.
TINY = FinetuneConfig(max_steps=2, batch_size=4, eval_batch_size=16, squad_max_seq_length=96, doc_stride=32,
                      max_query_length=24, n_best=5)  # a beam of 5: the 512-wide end layer dominates a tiny model


def config(model, output, tasks, **kw) -> EvalConfig:
    kw.setdefault("data_dir", str(DATA))
    return EvalConfig(model=str(model), output=str(output), tasks=tuple(tasks), seeds=kw.pop("seeds", 1),
                      finetune=kw.pop("finetune", TINY), device="cpu", **kw)


@pytest.fixture(scope="module")
def full_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-out")
    m = eval_run.run(config(tiny_model, out, ["glue", "squad_v1", "squad_v2"]))
    return m, json.loads(storage.read_text(storage.join(m["report_uri"], "results.json")))


def test_every_task_trains_and_yields_its_metrics(full_run, tiny_model):
    m, results = full_run
    assert set(results["tasks"]) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli_m", "mnli_mm", "qnli", "rte",
                                     "squad_v1", "squad_v2"}
    for key, entry in results["tasks"].items():
        task = TASKS[entry["task"]]
        assert set(entry["median"]) == set(task.metrics), key
        for metric, value in entry["median"].items():
            assert math.isfinite(value) and -100.0 <= value <= 100.0, (key, metric, value)
        assert len(entry["seeds"]) == 1
    assert results["tasks"]["mnli_mm"]["examples"] == {"train": 12, "validation_matched": 6,
                                                       "validation_mismatched": 6}
    # Small at 1M steps: the paper (Table 1) publishes only its GLUE average; the released Small++ row has per-task scores
    assert results["tasks"]["cola"]["paper"] is None and results["tasks"]["cola"]["released"] == 57.0
    assert results["tasks"]["squad_v1"]["released_metrics"] == {"exact": 75.8, "f1": None}  # README gives EM only
    glue = results["glue_average"]
    assert glue["paper"] == 79.9 and glue["released"] is None
    primaries = [results["tasks"][k]["median"][results["tasks"][k]["primary"]]
                 for k in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli_m", "qnli", "rte")]
    assert glue["ours"] == pytest.approx(sum(primaries) / 8)
    assert [r["label"] for r in results["paper_rows"]] == ["ELECTRA-Small, 1M steps (paper)",
                                                          "ELECTRA-Small++ released (4M steps, full-size generator)"]
    assert results["tier"]["name"] == "full" and results["heads"] == {"glue": "electra", "squad": "electra"}
    assert results["model"]["step"] == 1000 and results["model"]["size"] == "small"
    assert results["learning_rate"] == 1e-4 and results["layer_decay"] == 0.8  # small-size recipe


def test_report_layout_and_manifest(full_run, tiny_model):
    m, results = full_run
    report = m["report_uri"]
    assert Path(report).parent.name == "tiny-run" and Path(report).parent.parent.name == "reports"
    assert sorted(Path(report).iterdir()) == sorted(
        Path(report) / f for f in ("manifest.json", "report.html", "report.md", "results.json"))
    read = manifest.read(report, kind="report")
    model_m = manifest.read(tiny_model, kind="model")
    assert read["inputs"] == [manifest.input_ref(storage.normalize(tiny_model), model_m)]
    assert read["scores"]["cola"] == results["tasks"]["cola"]["median"]["mcc"]
    md = (Path(report) / "report.md").read_text()
    assert "| cola | mcc |" in md and "57.00" in md


def test_median_over_seeds(tiny_model, tmp_path):
    m = eval_run.run(config(tiny_model, tmp_path, ["rte"], seeds=3))
    entry = json.loads(Path(m["report_uri"], "results.json").read_text())["tasks"]["rte"]
    assert [s["seed"] for s in entry["seeds"]] == [1, 2, 3]
    assert entry["median"]["accuracy"] == statistics.median(s["scores"]["accuracy"] for s in entry["seeds"])


def _earlier_report(output: Path, stamp: str, step: int, mcc: float):
    d = output / "reports" / "tiny-run" / stamp
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "created": f"2020-01-0{step // 100}T00:00:00+00:00", "created_id": stamp, "model": {"step": step},
        "tasks": {"cola": {"primary": "mcc", "median": {"mcc": mcc}}}}))


def test_history_plot_and_regression_flag(tiny_model, tmp_path):
    _earlier_report(tmp_path, "20200101T000000.000Z", 100, 30.0)
    _earlier_report(tmp_path, "20200102T000000.000Z", 200, 60.0)  # the previous report: far better on CoLA
    m = eval_run.run(config(tiny_model, tmp_path, ["cola"], report=ReportConfig(regression_margin=1.0)))
    results = json.loads(Path(m["report_uri"], "results.json").read_text())
    (flag,) = results["regressions"]
    assert flag["task"] == "cola" and flag["previous"] == 60.0 and flag["drop"] > 1.0
    assert flag["previous_report"].endswith("20200102T000000.000Z")
    assert m["counters"]["regressions"] == 1
    md = Path(m["report_uri"], "report.md").read_text()
    assert "**cola** mcc: 60.00 →" in md and "REGRESSION" in md
    assert "| cola | (100, 30.00), (200, 60.00), (1000, " in md  # score over pretraining steps
    html = Path(m["report_uri"], "report.html").read_text()
    assert 'data-plot="steps-cola"' in html and "<polyline" in html


def test_regression_margin_is_configurable():
    prev = {"tasks": {"rte": {"primary": "accuracy", "median": {"accuracy": 70.0}}}}
    cur = {"rte": {"primary": "accuracy", "median": {"accuracy": 68.5}}}
    assert history.regressions(cur, prev, margin=1.0)[0]["drop"] == pytest.approx(1.5)
    assert history.regressions(cur, prev, margin=2.0) == []
    assert history.regressions(cur, None, margin=0.0) == []


@pytest.fixture
def no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("training started before the input was checked")
    monkeypatch.setattr("evaluation.evaluate.run_glue_seed", boom)
    monkeypatch.setattr("evaluation.evaluate.run_squad_seed", boom)


def test_bad_input_fails_before_training(tiny_model, tmp_path, no_training):
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "checkpoints" / "x.bin").write_bytes(b"0")
    with pytest.raises(ModelError, match="no discriminator/ directory and no config.json"):
        eval_run.run(config(empty, tmp_path / "o", ["rte"]))

    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_model, no_tok)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / "discriminator" / f).unlink()
    with pytest.raises(ModelError, match="no tokenizer files"):
        eval_run.run(config(no_tok, tmp_path / "o", ["rte"]))

    with pytest.raises(TaskError, match="unknown task 'mnli-m'; valid task names: glue, squad, cola, sst2"):
        eval_run.run(config(tiny_model, tmp_path / "o", ["cola", "mnli-m"]))

    mirror = tmp_path / "mirror"
    shutil.copytree(DATA, mirror)
    (mirror / "glue" / "QNLI" / "train.tsv").write_text("0\tWhat?\tThis.\tentailment\n")  # header row missing
    with pytest.raises(DataFormatError, match="QNLI/train.tsv: header must have columns"):
        eval_run.run(config(tiny_model, tmp_path / "o", ["cola", "qnli"], data_dir=str(mirror)))
    assert not (tmp_path / "o").exists()  # nothing written for failed runs


def test_cli_reports_user_errors_in_one_line(tiny_model, tmp_path, capsys, no_training):
    assert eval_run.main(["--model", str(tiny_model), "--tasks", "glue,wnli", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'wnli'" in err and "Traceback" not in err
    cfg = eval_run.parse(["--model", "m", "--output", "o", "--tasks", "glue", "--seeds", "5",
                          "--set", "finetune.max_steps=7", "report.regression_margin=0.5", "--set", "finetune.learning_rate=1e-4"])
    assert cfg.seeds == 5 and cfg.finetune.max_steps == 7 and cfg.report.regression_margin == 0.5
    assert cfg.finetune.learning_rate == 1e-4


@pytest.mark.integration
def test_s3_model_data_and_output(tiny_model, s3_bucket):
    model_uri = f"{s3_bucket}/runs/tiny/model"
    storage.upload_dir(tiny_model, model_uri)
    storage.upload_dir(str(DATA), f"{s3_bucket}/mirror")
    out = f"{s3_bucket}/runs/tiny"
    m = eval_run.run(config(model_uri, out, ["cola", "squad_v1"], data_dir=f"{s3_bucket}/mirror"))
    assert m["report_uri"].startswith(f"{out}/reports/tiny-run/")
    files = {storage.basename(f) for f in storage.list_files(m["report_uri"])}
    assert files == {"manifest.json", "report.html", "report.md", "results.json"}
    read = manifest.read(m["report_uri"], kind="report")
    assert read["inputs"][0]["uri"] == model_uri
    results = json.loads(storage.read_text(storage.join(m["report_uri"], "results.json")))
    assert set(results["tasks"]) == {"cola", "squad_v1"}


def test_name_and_step_from_the_export_path_without_manifest(tiny_model, tmp_path):
    from evaluation.model_io import inspect

    d = tmp_path / "my-run" / "model" / "step-000000700"
    shutil.copytree(Path(tiny_model) / "discriminator", d / "discriminator")
    info = inspect(str(d))
    assert (info.name, info.step, info.size, info.manifest) == ("my-run", 700, "custom", None)  # hidden 32
    assert inspect(str(d), name="other", size="base").name == "other"


def test_fine_tuned_squad_model_is_kept_and_reloads_to_the_same_scores(tiny_model, tmp_path):
    """finetune.save_models keeps config + weights + tokenizer; the reloaded model scores exactly as reported."""
    import math as _math

    from transformers import AutoTokenizer

    from evaluation import squad_data
    from evaluation.finetune import make_trainer
    from evaluation.heads import ElectraForSquad
    from evaluation.squad_task import predict, score

    ft = dataclasses.replace(TINY, save_models=True)
    m = eval_run.run(config(tiny_model, tmp_path, ["squad_v2"], finetune=ft))
    saved = Path(m["report_uri"]) / "models" / "squad_v2-seed1"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in saved.iterdir()}
    model = ElectraForSquad.from_pretrained(saved)  # a local dir: no hub
    tok = AutoTokenizer.from_pretrained(saved)
    trainer = make_trainer(model, [], ft, lr=1e-4, layer_decay=0.8, steps=1, seed=1, use_cpu=True, pad_id=0)
    task = TASKS["squad_v2"]
    examples = squad_data.load(task, str(DATA))["validation"]
    preds, na = predict(trainer, task, examples, tok, ft)
    again = score(task, examples, preds, na, 1 / (1 + _math.exp(-ft.qa_na_threshold)))
    reported = json.loads(Path(m["report_uri"], "results.json").read_text())["tasks"]["squad_v2"]["median"]
    assert again == pytest.approx(reported)


def test_hf_heads_stay_available(tiny_model, tmp_path):
    ft = dataclasses.replace(TINY, glue_head="hf", squad_head="hf")
    m = eval_run.run(config(tiny_model, tmp_path, ["mrpc", "squad_v2"], finetune=ft))
    results = json.loads(Path(m["report_uri"], "results.json").read_text())
    assert results["heads"] == {"glue": "hf", "squad": "hf"}
    assert set(results["tasks"]["squad_v2"]["median"]) == set(TASKS["squad_v2"].metrics)


def test_quick_tier_runs_its_tasks_once_with_capped_steps(tiny_model, tmp_path, monkeypatch):
    from evaluation import evaluate as ev

    calls = []
    real_glue, real_squad = ev.run_glue_seed, ev.run_squad_seed

    def spy(real):
        def run(task, data, *a, cap, **k):
            calls.append((task.name, k["seed"], cap, len(data["train"])))
            return real(task, data, *a, cap=cap, **k)
        return run

    monkeypatch.setattr(ev, "run_glue_seed", spy(real_glue))
    monkeypatch.setattr(ev, "run_squad_seed", spy(real_squad))
    ft = dataclasses.replace(TINY, max_steps=-1, batch_size=4)
    cfg = EvalConfig(model=str(tiny_model), output=str(tmp_path), tier="quick", data_dir=str(DATA), finetune=ft,
                     device="cpu")
    monkeypatch.setattr("evaluation.tiers.TIERS", {**ev.tiers.TIERS, "quick": dataclasses.replace(
        ev.tiers.TIERS["quick"], max_steps=2)})  # the fixtures are tiny: a 2-step cap shows the subsampling
    m = eval_run.run(cfg)
    assert calls == [("mnli", 1, 2, 8), ("sst2", 1, 2, 8), ("squad_v2", 1, 2, 8)]  # 2 steps x batch 4 examples
    results = json.loads(Path(m["report_uri"], "results.json").read_text())
    assert results["tier"]["name"] == "quick" and results["seeds"] == 1 and m["tier"] == "quick"
    assert set(results["tasks"]) == {"mnli_m", "mnli_mm", "sst2", "squad_v2"}

"""Task registry and the official-format loaders (GLUE TSV, SQuAD JSON) on the fixture mirror."""

import json
import shutil
from pathlib import Path

import pytest

from evaluation import glue_data, squad_data, tasks
from evaluation.glue_data import DataFormatError

DATA = Path(__file__).parent / "data"

EXPECTED = {  # task: (train rows, {dev split: rows}, fields)
    "cola": (12, {"validation": 6}, ["sentence"]),
    "sst2": (12, {"validation": 6}, ["sentence"]),
    "mrpc": (12, {"validation": 6}, ["sentence1", "sentence2"]),
    "stsb": (12, {"validation": 6}, ["sentence1", "sentence2"]),
    "qqp": (12, {"validation": 6}, ["question1", "question2"]),
    "mnli": (12, {"validation_matched": 6, "validation_mismatched": 6}, ["premise", "hypothesis"]),
    "qnli": (12, {"validation": 6}, ["question", "sentence"]),
    "rte": (12, {"validation": 6}, ["sentence1", "sentence2"]),
}


def test_resolve_expands_groups_and_rejects_unknown():
    names = [t.name for t in tasks.resolve("glue,squad_v1,squad_v2")]
    assert names == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "squad_v1", "squad_v2"]
    assert [t.name for t in tasks.resolve("RTE,sst-2,rte")] == ["rte", "sst2"]
    with pytest.raises(tasks.TaskError, match="unknown task 'wnli'.*valid task names: glue, squad, cola"):
        tasks.resolve("cola,wnli")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_glue_tsv_layouts(name):
    task = tasks.TASKS[name]
    n_train, devs, fields = EXPECTED[name]
    data = glue_data.load(task, str(DATA))
    assert len(data["train"]) == n_train
    assert {k: len(v) for k, v in data.items() if k != "train"} == devs
    for rows in data.values():
        for r in rows:
            assert sorted(r) == sorted(fields + ["label"])
            assert all(isinstance(r[f], str) and r[f] for f in fields)
            if task.num_labels == 1:
                assert isinstance(r["label"], float) and 0.0 <= r["label"] <= 5.0
            else:
                assert r["label"] in range(task.num_labels)


def test_glue_label_values_and_columns():
    cola = glue_data.load(tasks.TASKS["cola"], str(DATA))["train"]
    assert cola[2] == {"sentence": "Ran the children park to the.", "label": 0}  # '*'-marked row
    mnli = glue_data.load(tasks.TASKS["mnli"], str(DATA))
    # dev rows have five annotator labels; gold_label is the last column. Hub ids: entailment 0, neutral 1.
    assert [r["label"] for r in mnli["validation_matched"][:3]] == [0, 1, 2]
    stsb = glue_data.load(tasks.TASKS["stsb"], str(DATA))["train"]
    assert stsb[0]["label"] == 5.0 and stsb[1]["label"] == 2.4
    mrpc = glue_data.load(tasks.TASKS["mrpc"], str(DATA))["train"]  # starts with a byte-order mark
    assert mrpc[1]["sentence1"] == mrpc[1]["sentence2"] and mrpc[1]["label"] == 1


def _copy_task(tmp_path, tsv_dir):
    shutil.copytree(DATA / "glue" / tsv_dir, tmp_path / tsv_dir)
    return tmp_path / tsv_dir


def test_cola_with_a_header_is_rejected(tmp_path):
    d = _copy_task(tmp_path, "CoLA")
    (d / "train.tsv").write_text("index\tsentence\n0\tThe cat sat.\n")
    with pytest.raises(DataFormatError, match="CoLA train/dev files have no header"):
        glue_data.load(tasks.TASKS["cola"], str(tmp_path))


def test_wrong_header_and_bad_labels_are_rejected(tmp_path):
    d = _copy_task(tmp_path, "RTE")
    (d / "dev.tsv").write_text("sentence\tlabel\nfoo\t1\n")  # an SST-2 file in the RTE slot
    with pytest.raises(DataFormatError, match=r"header must have columns \['sentence1', 'sentence2', 'label'\]"):
        glue_data.load(tasks.TASKS["rte"], str(tmp_path))
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataFormatError, match=r"dev.tsv:2: rte label 'maybe' is not one of"):
        glue_data.load(tasks.TASKS["rte"], str(tmp_path))


def test_missing_task_dir_says_what_layout_is_expected(tmp_path):
    with pytest.raises(DataFormatError, match="no MNLI/train.tsv.*dev_matched.tsv, dev_mismatched.tsv"):
        glue_data.load(tasks.TASKS["mnli"], str(tmp_path))


def test_squad_json_loader():
    v1 = squad_data.load(tasks.TASKS["squad_v1"], str(DATA))
    v2 = squad_data.load(tasks.TASKS["squad_v2"], str(DATA))
    assert all(e["answers"]["text"] for e in v1["train"] + v1["validation"])
    unanswerable = [e for e in v2["validation"] if not e["answers"]["text"]]
    assert unanswerable, "SQuAD 2.0 fixture must hold an unanswerable question"
    for e in v1["train"]:  # answer_start points at the answer in the context
        start, text = e["answers"]["answer_start"][0], e["answers"]["text"][0]
        assert e["context"][start:start + len(text)] == text
    official = squad_data.to_official(v2["validation"])
    from evaluation import squad_metrics
    perfect = {e["id"]: (e["answers"]["text"] or [""])[0] for e in v2["validation"]}
    assert squad_metrics.squad_v2(official, perfect)["exact"] == 100.0


def test_squad_wrong_format_is_rejected(tmp_path):
    (tmp_path / "train-v1.1.json").write_text(json.dumps([{"question": "q"}]))
    (tmp_path / "dev-v1.1.json").write_text("{}")
    with pytest.raises(DataFormatError, match="expected the official SQuAD layout"):
        squad_data.load(tasks.TASKS["squad_v1"], str(tmp_path))
    with pytest.raises(DataFormatError, match="no train-v2.0.json"):
        squad_data.load(tasks.TASKS["squad_v2"], str(tmp_path))


def test_hub_loaders_map_columns(monkeypatch):
    """The hub path (used when no --data-dir is given) with `datasets.load_dataset` stubbed: no network."""
    import datasets

    calls = []

    def fake_load(name, config=None):
        calls.append((name, config))
        if name == "nyu-mll/glue":
            row = {"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}
            return {s: [row] for s in ("train", "validation_matched", "validation_mismatched", "test_matched")}
        row = {"id": "1", "title": "T", "context": "c", "question": "q", "answers": {"text": [], "answer_start": []}}
        return {"train": [row], "validation": [row]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    mnli = glue_data.load(tasks.TASKS["mnli"])
    assert mnli == {s: [{"premise": "p", "hypothesis": "h", "label": 2}]
                    for s in ("train", "validation_matched", "validation_mismatched")}
    squad = squad_data.load(tasks.TASKS["squad_v2"])
    assert squad["validation"][0]["question"] == "q"
    assert calls == [("nyu-mll/glue", "mnli"), ("rajpurkar/squad_v2", None)]

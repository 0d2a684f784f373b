"""The SQuAD 2.0 metric reproduces the official evaluation on real leaderboard predictions."""

import json
import subprocess
import sys

import pytest

from evaluation import squad_metrics

SYSTEMS = ("BERT", "BiDAF__Self_Attention__ELMo", "nlnet")


@pytest.fixture(scope="module")
def ref(shared_dir):
    return shared_dir / "reference" / "squad-v2-normans"


@pytest.mark.parametrize("system", SYSTEMS)
def test_reproduces_expected_json(ref, system):
    expected = json.loads((ref / "expected.json").read_text())[system]
    data = json.loads((ref / "dev-v2.0-normans.json").read_text())
    preds = json.loads((ref / f"pred_{system}.json").read_text())
    got = squad_metrics.squad_v2(data, preds)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-9, key


def test_cli_prints_official_keys(ref, tmp_path):
    expected = json.loads((ref / "expected.json").read_text())
    for system in SYSTEMS:
        out = subprocess.run([sys.executable, "-m", "evaluation.squad_metrics", str(ref / "dev-v2.0-normans.json"),
                              str(ref / f"pred_{system}.json")], capture_output=True, text=True, check=True)
        got = json.loads(out.stdout)
        assert max(abs(got[k] - v) for k, v in expected[system].items()) <= 1e-9
    # With --na-probs the best no-answer threshold keys appear, as in the official script.
    preds = json.loads((ref / "pred_BERT.json").read_text())
    na = tmp_path / "na.json"
    na.write_text(json.dumps({k: (0.9 if v == "" else 0.2) for k, v in preds.items()}))
    got = squad_metrics.main([str(ref / "dev-v2.0-normans.json"), str(ref / "pred_BERT.json"), "--na-probs", str(na)])
    assert {"best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"} <= set(got)
    assert got["best_f1"] >= got["f1"] - 1e-9


def test_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "squad"}')
    with pytest.raises(squad_metrics.SquadFormatError, match="not a SQuAD file"):
        squad_metrics.squad_v2(json.loads(bad.read_text()), {})


def test_v1_cli_on_fixture(tmp_path):
    from pathlib import Path

    dev = Path(__file__).parent / "data" / "squad" / "dev-v1.1.json"
    data = json.loads(dev.read_text())
    preds = {q["id"]: q["answers"][0]["text"] for p in data["data"][0]["paragraphs"] for q in p["qas"]}
    first = next(iter(preds))
    preds[first] = "something else entirely"
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(preds))
    got = squad_metrics.main([str(dev), str(pf), "--version", "1.1"])
    n = len(preds)
    assert set(got) == {"exact_match", "f1"}
    assert got["exact_match"] == pytest.approx(100.0 * (n - 1) / n)

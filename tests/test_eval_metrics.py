"""GLUE and SQuAD metric functions on cases worked out by hand."""

import math

import pytest

from evaluation import metrics, squad_metrics as sm


def test_accuracy_f1_mcc_by_hand():
    preds, labels = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]
    # tp=2 fp=1 fn=1 tn=1
    assert metrics.accuracy(preds, labels) == pytest.approx(60.0)
    assert metrics.f1_binary(preds, labels) == pytest.approx(100 * 4 / 6)
    assert metrics.matthews_corr(preds, labels) == pytest.approx(100 * (2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2))
    assert metrics.matthews_corr([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(100.0)
    assert metrics.matthews_corr([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-100.0)


def test_degenerate_cases_score_zero():
    assert metrics.matthews_corr([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction: MCC undefined
    assert metrics.f1_binary([0, 0], [1, 1]) == 0.0
    assert metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0


def test_pearson_spearman_by_hand():
    x, y = [1, 2, 3, 4], [1, 4, 9, 16]
    # deviations (-1.5,-.5,.5,1.5) and (-6.5,-3.5,1.5,8.5): r = 25 / sqrt(5 * 129)
    assert metrics.pearson(x, y) == pytest.approx(100 * 25 / math.sqrt(5 * 129))
    assert metrics.spearman(x, y) == pytest.approx(100.0)  # monotone
    # ties get the mean rank: ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4) -> 4.5 / sqrt(4.5 * 5)
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(100 * 4.5 / math.sqrt(22.5))


def test_glue_scores_uses_task_metric_list():
    out = metrics.glue_scores(("accuracy", "f1"), [1, 0], [1, 1])
    assert out == pytest.approx({"accuracy": 50.0, "f1": 100 * 2 / 3})


def test_squad_normalisation_and_token_f1():
    assert sm.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert sm.normalize_answer("an apple a day") == "apple day"
    assert sm.exact_score("the Eiffel Tower.", "Eiffel tower") == 1
    # gold {cat, sat}, pred {cat, sat, down}: precision 2/3, recall 1 -> F1 0.8
    assert sm.f1_v2("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert sm.f1_v2("", "") == 1.0 and sm.f1_v2("", "x") == 0.0
    assert sm.f1_v1("", "") == 0.0  # evaluate-v1.1.py has no empty-string special case


def _qa(qid, answers):
    return {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}


DATA = {"data": [{"title": "t", "paragraphs": [{"context": "Paris is blue", "qas": [
    _qa("q1", ["Paris"]), _qa("q2", []), _qa("q3", ["blue", "Blue."])]}]}]}


def test_squad_v2_best_threshold_by_hand():
    preds = {"q1": "Paris", "q2": "London", "q3": ""}
    na = {"q1": 0.1, "q2": 0.9, "q3": 0.5}
    out = sm.squad_v2(DATA, preds, na)
    assert out["exact"] == pytest.approx(100 / 3) and out["total"] == 3
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["HasAns_total"] == 2
    assert out["NoAns_exact"] == 0.0 and out["NoAns_total"] == 1
    # abstain on all: 1 right; admit q1 (na .1): 2 right -> best; q3 adds 0; q2 wrongly answered: -1
    assert out["best_exact"] == pytest.approx(200 / 3) and out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == pytest.approx(200 / 3) and out["best_f1_thresh"] == 0.1
    assert "best_exact" not in sm.squad_v2(DATA, preds)  # only with na-probs, as the official script


def test_squad_v1_missing_prediction_scores_zero():
    data = {"data": [{"paragraphs": [{"context": "c", "qas": [_qa("a", ["x y"]), _qa("b", ["z"])]}]}]}
    out = sm.squad_v1(data, {"a": "x"})
    assert out["exact_match"] == 0.0
    assert out["f1"] == pytest.approx(100 * (2 * 1 * 0.5 / 1.5) / 2)  # a: P=1 R=.5 -> 2/3; b missing -> 0

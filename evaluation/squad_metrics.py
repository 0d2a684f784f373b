"""SQuAD 1.1 and 2.0 metrics, as the official evaluation scripts define them.

    python -m evaluation.squad_metrics dev-v2.0.json predictions.json [--na-probs na_prob.json]

prints the official keys as JSON: `exact`, `f1`, `total`, `HasAns_*`, `NoAns_*`, and with
`--na-probs` also `best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh`
(`--version 1.1` prints `exact_match` and `f1` like evaluate-v1.1.py). The answer
normalisation, the order of summation and the no-answer threshold search follow the official
scripts step by step so that scores agree to the last bit, not only to rounding.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import string
import sys
from typing import Iterable

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


class SquadFormatError(ValueError):
    """A SQuAD data or prediction file that is not in the official format."""


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace (official)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_score(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1_v2(gold: str, pred: str) -> float:
    """Token F1; an empty gold or prediction scores 1 only when both are empty (2.0 script)."""
    g, p = _tokens(gold), _tokens(pred)
    if not g or not p:
        return float(g == p)
    return _overlap_f1(g, p)


def f1_v1(gold: str, pred: str) -> float:
    """Token F1 of evaluate-v1.1.py (no special case for empty strings)."""
    return _overlap_f1(normalize_answer(gold).split(), normalize_answer(pred).split())


def _overlap_f1(g: list[str], p: list[str]) -> float:
    same = sum((collections.Counter(g) & collections.Counter(p)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return (2 * precision * recall) / (precision + recall)


def iter_qas(data: dict) -> Iterable[dict]:
    """Every question of an official SQuAD JSON file, in file order."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SquadFormatError("not a SQuAD file: expected a JSON object with a 'data' list of articles")
    for article in data["data"]:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                if "id" not in qa or "answers" not in qa:
                    raise SquadFormatError(f"question without 'id' or 'answers': {str(qa)[:200]}")
                yield qa


def squad_v1(data: dict, preds: dict[str, str]) -> dict:
    """evaluate-v1.1.py: mean over every question; a missing prediction scores 0."""
    em = f1 = 0.0
    total = 0
    for qa in iter_qas(data):
        total += 1
        if qa["id"] not in preds:
            print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
            continue
        golds = [a["text"] for a in qa["answers"]]
        pred = preds[qa["id"]]
        em += max(exact_score(g, pred) for g in golds)
        f1 += max(f1_v1(g, pred) for g in golds)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


def _raw_scores(data: dict, preds: dict[str, str]) -> tuple[dict, dict, dict]:
    has_ans, exact, f1 = {}, {}, {}
    for qa in iter_qas(data):
        qid = qa["id"]
        has_ans[qid] = bool(qa["answers"])
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        if qid not in preds:
            print(f"Missing prediction for {qid}", file=sys.stderr)
            continue
        exact[qid] = max(exact_score(g, preds[qid]) for g in golds)
        f1[qid] = max(f1_v2(g, preds[qid]) for g in golds)
    return has_ans, exact, f1


def _apply_threshold(scores: dict, na_probs: dict, has_ans: dict, thresh: float) -> dict:
    return {q: (float(not has_ans[q]) if na_probs[q] > thresh else s) for q, s in scores.items()}


def _eval_dict(exact: dict, f1: dict, qids: list[str] | None = None) -> dict:
    if not qids:
        total = len(exact)
        return {"exact": 100.0 * sum(exact.values()) / total, "f1": 100.0 * sum(f1.values()) / total, "total": total}
    total = len(qids)
    return {"exact": 100.0 * sum(exact[k] for k in qids) / total,
            "f1": 100.0 * sum(f1[k] for k in qids) / total, "total": total}


def _best_threshold(preds: dict, scores: dict, na_probs: dict, has_ans: dict) -> tuple[float, float]:
    # Start by answering nothing, then admit answers in order of rising no-answer probability.
    cur = best = sum(1 for k in has_ans if not has_ans[k])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        cur += scores[qid] if has_ans[qid] else (-1 if preds[qid] else 0)
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def squad_v2(data: dict, preds: dict[str, str], na_probs: dict[str, float] | None = None,
             na_prob_thresh: float = 1.0) -> dict:
    """evaluate-v2.0.py: overall, HasAns_* and NoAns_* scores, best thresholds when na_probs are given."""
    given = na_probs is not None
    na = na_probs if given else {k: 0.0 for k in preds}
    has_ans, exact_raw, f1_raw = _raw_scores(data, preds)
    if not exact_raw:
        raise SquadFormatError("no prediction matches a question id of the data file")
    exact = _apply_threshold(exact_raw, na, has_ans, na_prob_thresh)
    f1 = _apply_threshold(f1_raw, na, has_ans, na_prob_thresh)
    out = _eval_dict(exact, f1)
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        qids = [k for k, v in has_ans.items() if v is want]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
    if given:
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(preds, exact_raw, na, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(preds, f1_raw, na, has_ans)
    return out


def _load_json(path: str, what: str):
    from common import storage

    try:
        return json.loads(storage.read_text(path))
    except json.JSONDecodeError as exc:
        raise SquadFormatError(f"{what} {path} is not valid JSON: {exc}") from None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m evaluation.squad_metrics", description=__doc__.split("\n\n")[0])
    ap.add_argument("data_file", help="official SQuAD JSON (local path or s3://)")
    ap.add_argument("pred_file", help="JSON object: question id -> answer text ('' for no answer)")
    ap.add_argument("--na-probs", dest="na_probs", help="JSON object: question id -> no-answer probability")
    ap.add_argument("--na-prob-thresh", type=float, default=1.0, help="official default: predict no answer above it")
    ap.add_argument("--version", choices=["1.1", "2.0"], default="2.0")
    a = ap.parse_args(argv)
    data = _load_json(a.data_file, "data file")
    preds = _load_json(a.pred_file, "prediction file")
    if a.version == "1.1":
        out = squad_v1(data, preds)
    else:
        na = _load_json(a.na_probs, "na-probs file") if a.na_probs else None
        out = squad_v2(data, preds, na, a.na_prob_thresh)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

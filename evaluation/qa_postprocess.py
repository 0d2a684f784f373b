"""Start/end logits of every window -> one answer text (and a no-answer probability) per question.

As in the official BERT/ELECTRA SQuAD code and HF `run_qa`: over all windows of a question take
the `n_best` highest start and end logits, keep spans inside the context, end >= start, at most
`max_answer_length` tokens; the best span's score is start + end logit. The no-answer score is
the [CLS] start + end logit, its minimum over windows. SQuAD 2.0 answers "" when that beats the
best span; the probability sent to the threshold search is sigmoid(null score - best span score).
"""

from __future__ import annotations

import math

import numpy as np


def _top(logits: np.ndarray, n: int) -> list[int]:
    return [int(i) for i in np.argsort(logits)[::-1][:n]]


def best_span(start: np.ndarray, end: np.ndarray, offsets: list, n_best: int, max_len: int):
    """(score, (char_start, char_end)) of the best valid span in one window, or None."""
    best = None
    for s in _top(start, n_best):
        for e in _top(end, n_best):
            if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                continue
            if e < s or e - s + 1 > max_len:
                continue
            score = float(start[s] + end[e])
            if best is None or score > best[0]:
                best = (score, (offsets[s][0], offsets[e][1]))
    return best


def postprocess(examples: list[dict], owner: list[int], offsets: list[list], start_logits: np.ndarray,
                end_logits: np.ndarray, *, n_best: int, max_answer_length: int, version_2: bool):
    """(predictions {id: text}, na_probs {id: p}) for every example."""
    per_example: dict[int, list[int]] = {}
    for f, ex in enumerate(owner):
        per_example.setdefault(ex, []).append(f)
    preds, na_probs = {}, {}
    for i, ex in enumerate(examples):
        best, null = None, math.inf
        for f in per_example.get(i, []):
            null = min(null, float(start_logits[f][0] + end_logits[f][0]))
            cand = best_span(start_logits[f], end_logits[f], offsets[f], n_best, max_answer_length)
            if cand and (best is None or cand[0] > best[0]):
                best = cand
        text = ex["context"][best[1][0]:best[1][1]].strip() if best else ""  # SentencePiece offsets may hold the space
        diff = null - best[0] if best else math.inf
        if version_2 and diff > 0:
            text = ""
        preds[ex["id"]] = text
        na_probs[ex["id"]] = 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, diff))))
    return preds, na_probs

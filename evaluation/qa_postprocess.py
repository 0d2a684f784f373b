"""Model outputs of every window -> one answer text (and a no-answer probability) per question.

Two decoders, one per SQuAD head (evaluation/heads.py):

- `postprocess_beam`, for ELECTRA's head (the default), as the official `finetune/qa/qa_metrics.py`:
  candidates are the beam's (start, end) pairs scored by summed log-probability; starts must be
  context tokens in their max-context window; the prediction is always the best span, and the
  answerability logit (minimum over windows) is the no-answer score, sent as its sigmoid.
- `postprocess`, for HF's head, as the official BERT code and HF `run_qa`: over all windows take
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


def max_context_positions(offsets: list[list]) -> list[set[int]]:
    """Per window of one example, the positions whose token has its most context in that window.

    A context token seen by several overlapping windows is scored where it sits farthest from a
    window edge: min(tokens left, tokens right) + 0.01 * window length, the first window winning
    ties (official `_check_is_max_context`). Only those positions may start an answer.
    """
    starts = sorted({o[0] for offs in offsets for o in offs if o is not None})
    doc_index = {s: i for i, s in enumerate(starts)}  # char start -> position in the whole context
    spans = []
    for offs in offsets:
        doc = [(j, doc_index[o[0]]) for j, o in enumerate(offs) if o is not None]
        spans.append((doc[0][1], len(doc), doc) if doc else (0, 0, []))
    best: dict[int, tuple[float, int]] = {}
    for w, (first, length, doc) in enumerate(spans):
        for _, p in doc:
            score = min(p - first, first + length - 1 - p) + 0.01 * length
            if p not in best or score > best[p][0]:
                best[p] = (score, w)
    return [{j for j, p in doc if best[p][1] == w} for w, (_, _, doc) in enumerate(spans)]


def postprocess_beam(examples: list[dict], owner: list[int], offsets: list[list], beam: dict[str, np.ndarray], *,
                     max_answer_length: int, version_2: bool):
    """ELECTRA's head outputs -> (predictions {id: text}, na_probs {id: P(no answer)}), as `qa_metrics.py` does.

    Candidates are the beam's (start, end) pairs, scored by start + end log-probability, over all
    windows of the question; a pair is dropped when the start is [CLS] or outside the context, is
    not the token's max-context window, the end is outside the context or before the start, or
    the span is longer than `max_answer_length` tokens. The prediction is the best span's text
    (the official code always answers and leaves abstaining to the no-answer threshold); the
    no-answer score is the answerability logit, its minimum over windows, sent as its sigmoid.
    """
    per_example: dict[int, list[int]] = {}
    for f, ex in enumerate(owner):
        per_example.setdefault(ex, []).append(f)
    s_lp, s_idx = beam["start_top_log_probs"], beam["start_top_index"]
    e_lp, e_idx, null_logit = beam["end_top_log_probs"], beam["end_top_index"], beam["answerable_logit"]
    preds, na_probs = {}, {}
    for i, ex in enumerate(examples):
        feats = per_example.get(i, [])
        allowed = max_context_positions([offsets[f] for f in feats])
        best, null = None, math.inf
        for f, starts_ok in zip(feats, allowed):
            null = min(null, float(null_logit[f]))
            offs = offsets[f]
            for a in range(s_idx.shape[1]):
                s = int(s_idx[f, a])
                if s <= 0 or s >= len(offs) or offs[s] is None or s not in starts_ok:
                    continue  # [CLS], padding of a short beam (-100), or not a context token
                for b in range(e_idx.shape[2]):
                    e = int(e_idx[f, a, b])
                    if e < s or e >= len(offs) or offs[e] is None or e - s + 1 > max_answer_length:
                        continue
                    score = float(s_lp[f, a] + e_lp[f, a, b])
                    if best is None or score > best[0]:
                        best = (score, (offs[s][0], offs[e][1]))
        preds[ex["id"]] = ex["context"][best[1][0]:best[1][1]].strip() if best else ""
        if version_2:
            na_probs[ex["id"]] = 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, null))))
    return preds, na_probs

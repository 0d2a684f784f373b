"""SQuAD examples -> model windows (features), as the official BERT/ELECTRA code cuts them.

A question longer than `max_query_length` tokens is cut; a context longer than the window is
split into windows whose starts are `doc_stride` tokens apart (the official meaning; HF's
`stride` argument is the overlap, so it is computed per question). A training window that does
not contain the whole answer, and every unanswerable question, points at [CLS] (index 0).

Windows are not padded: the collator pads each batch to its longest window (most SQuAD
contexts are far shorter than 512 tokens). Each window also carries `context_mask` (1 on
context tokens: where ELECTRA's head may put a span) and `is_impossible` (the question has no
answer: the label of ELECTRA's answerability classifier).
"""

from __future__ import annotations

import numpy as np

from evaluation.config import FinetuneConfig


def _cut_question(question: str, tokenizer, max_query: int) -> str:
    q = question.lstrip()  # leading spaces in SQuAD questions break offset arithmetic for no gain
    enc = tokenizer(q, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_query:
        return q
    return q[: enc["offset_mapping"][max_query - 1][1]]


def windows(example: dict, tokenizer, ft: FinetuneConfig) -> tuple[list[dict], list[list]]:
    """(features, offsets): one feature per window; offsets are None outside the context."""
    question = _cut_question(example["question"], tokenizer, ft.max_query_length)
    q_len = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    context_room = ft.squad_max_seq_length - q_len - 3  # [CLS] q [SEP] context [SEP]
    enc = tokenizer(question, example["context"], truncation="only_second", max_length=ft.squad_max_seq_length,
                    stride=max(0, context_room - ft.doc_stride), return_overflowing_tokens=True,
                    return_offsets_mapping=True, return_token_type_ids=True)
    feats, offsets = [], []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        offs = [o if seq_ids[j] == 1 else None for j, o in enumerate(enc["offset_mapping"][i])]
        # int32 arrays: SQuAD 2.0 train is ~130k windows of 512; Python int lists would need several GB
        f = {k: np.asarray(enc[k][i], dtype=np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
        f["context_mask"] = np.asarray([o is not None for o in offs], dtype=np.int32)
        f["start_positions"], f["end_positions"] = _answer_positions(example, offs)
        f["is_impossible"] = int(not example["answers"]["text"])
        feats.append(f)
        offsets.append(offs)
    return feats, offsets


def _answer_positions(example: dict, offs: list) -> tuple[int, int]:
    answers = example["answers"]
    if not answers["text"]:
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    ctx = [j for j, o in enumerate(offs) if o is not None]
    if not ctx or offs[ctx[0]][0] > start_char or offs[ctx[-1]][1] < end_char:
        return 0, 0  # answer not (wholly) in this window
    start = next(j for j in ctx if offs[j][1] > start_char)
    end = next(j for j in reversed(ctx) if offs[j][0] < end_char)
    return start, end


def featurize(examples: list[dict], tokenizer, ft: FinetuneConfig):
    """(features, example index per feature, offsets per feature) for a list of examples."""
    feats, owner, offsets = [], [], []
    for i, ex in enumerate(examples):
        f, o = windows(ex, tokenizer, ft)
        feats += f
        offsets += o
        owner += [i] * len(f)
    return feats, owner, offsets

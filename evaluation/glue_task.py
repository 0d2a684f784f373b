"""Fine-tune and score one GLUE task for one seed."""

from __future__ import annotations

import numpy as np
from transformers import set_seed

from evaluation.config import FinetuneConfig
from evaluation.finetune import ListDataset, load_for_finetuning, make_trainer, train_steps
from evaluation.heads import glue_model_class
from evaluation.metrics import glue_scores
from evaluation.tasks import TaskSpec, split_label


def encode(rows: list[dict], task: TaskSpec, tokenizer, max_len: int) -> ListDataset:
    """Token ids per example, unpadded (the collator pads each batch to its longest)."""
    texts = [[r[f] for r in rows] for f in task.text_fields]
    enc = tokenizer(*texts, truncation=True, max_length=max_len, return_token_type_ids=True)
    feats = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids")} for i in range(len(rows))]
    for f, r in zip(feats, rows):
        f["labels"] = float(r["label"]) if task.num_labels == 1 else int(r["label"])
    return ListDataset(feats)


def training_rows(task: TaskSpec, rows: list[dict], ft: FinetuneConfig) -> list[dict]:
    """The training examples; MRPC and STS-B also in swapped order (official `double_unordered`)."""
    if ft.double_unordered and task.unordered:
        a, b = task.text_fields
        return rows + [{**r, a: r[b], b: r[a]} for r in rows]
    return rows


def run_glue_seed(task: TaskSpec, data: dict[str, list[dict]], model_dir: str, tokenizer, ft: FinetuneConfig, *,
                  lr: float, layer_decay: float, seed: int, use_cpu: bool, cap: int = -1, progress=None,
                  save_dir: str | None = None) -> dict[str, dict[str, float]]:
    """{result key (cola, mnli_m, ...): {metric: score}} for one fine-tuning run."""
    set_seed(seed)  # before the model exists: the seed must also pick the new head's initial weights
    kw = {"problem_type": "regression"} if task.num_labels == 1 else {}
    model = load_for_finetuning(glue_model_class(ft.glue_head), model_dir, num_labels=task.num_labels, **kw)
    epochs = ft.epochs if ft.epochs is not None else task.epochs
    train = encode(training_rows(task, data["train"], ft), task, tokenizer, ft.max_seq_length)
    steps = train_steps(len(train), ft, epochs, cap)
    trainer = make_trainer(model, train.rows, ft, lr=lr, layer_decay=layer_decay, steps=steps, seed=seed,
                           use_cpu=use_cpu, pad_id=tokenizer.pad_token_id or 0, progress=progress)
    trainer.train()
    if save_dir:
        trainer.model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    out = {}
    for split in task.eval_splits:
        rows = data[split]
        logits = trainer.predict(encode(rows, task, tokenizer, ft.max_seq_length)).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds = logits.reshape(-1) if task.num_labels == 1 else np.argmax(logits, axis=-1)
        out[split_label(task, split)] = glue_scores(task.metrics, preds, [r["label"] for r in rows])
    return out

"""Fine-tune and score SQuAD 1.1 or 2.0 for one seed."""

from __future__ import annotations

import math

from transformers import set_seed

from evaluation import squad_metrics
from evaluation.config import FinetuneConfig
from evaluation.finetune import ListDataset, load_for_finetuning, make_trainer, train_steps
from evaluation.heads import BEAM_FIELDS, squad_model_class
from evaluation.qa_features import featurize
from evaluation.qa_postprocess import postprocess, postprocess_beam
from evaluation.squad_data import to_official
from evaluation.tasks import TaskSpec


def score(task: TaskSpec, examples: list[dict], preds: dict, na_probs: dict,
          na_prob_thresh: float = 1.0) -> dict[str, float]:
    """Official metrics; SQuAD 2.0 answers "" where the no-answer probability is above `na_prob_thresh`."""
    data = to_official(examples)
    if task.squad_v2:
        out = squad_metrics.squad_v2(data, preds, na_probs, na_prob_thresh)
        return {k: float(v) for k, v in out.items() if k in task.metrics}
    out = squad_metrics.squad_v1(data, preds)
    return {"exact": out["exact_match"], "f1": out["f1"]}


def predict(trainer, task: TaskSpec, examples: list[dict], tokenizer, ft: FinetuneConfig) -> tuple[dict, dict]:
    """(predictions {id: text}, na_probs {id: P(no answer)}) of the trained model on `examples`."""
    feats, owner, offsets = featurize(examples, tokenizer, ft)
    for f in feats:  # labels are meaningless at inference; without them the heads run their inference path
        for k in ("start_positions", "end_positions", "is_impossible"):
            f.pop(k)
    out = trainer.predict(ListDataset(feats)).predictions
    if ft.squad_head == "electra":
        beam = dict(zip(BEAM_FIELDS, out))
        return postprocess_beam(examples, owner, offsets, beam, max_answer_length=ft.max_answer_length,
                                version_2=task.squad_v2)
    start, end = out[:2]
    return postprocess(examples, owner, offsets, start, end, n_best=ft.n_best,
                       max_answer_length=ft.max_answer_length, version_2=task.squad_v2)


def run_squad_seed(task: TaskSpec, data: dict[str, list[dict]], model_dir: str, tokenizer, ft: FinetuneConfig, *,
                   lr: float, layer_decay: float, seed: int, use_cpu: bool, cap: int = -1, progress=None,
                   save_dir: str | None = None) -> dict[str, dict[str, float]]:
    set_seed(seed)  # before the model exists: the seed must also pick the new head's initial weights
    model_class = squad_model_class(ft.squad_head)
    kwargs = {}
    if ft.squad_head == "electra":
        from transformers import ElectraConfig

        config = ElectraConfig.from_pretrained(model_dir)
        config.qa_beam = ft.n_best  # saved with the model: a reloaded model decodes the same way
        kwargs["config"] = config
    model = load_for_finetuning(model_class, model_dir, **kwargs)
    train_feats, _, _ = featurize(data["train"], tokenizer, ft)
    if ft.squad_head != "electra":
        for f in train_feats:  # HF's head has no answerability classifier
            f.pop("context_mask"), f.pop("is_impossible")
    epochs = ft.epochs if ft.epochs is not None else task.epochs
    steps = train_steps(len(train_feats), ft, epochs, cap)
    trainer = make_trainer(model, train_feats, ft, lr=lr, layer_decay=layer_decay, steps=steps, seed=seed,
                           use_cpu=use_cpu, pad_id=tokenizer.pad_token_id or 0, progress=progress)
    trainer.train()
    if save_dir:
        trainer.model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    examples = data["validation"]
    preds, na_probs = predict(trainer, task, examples, tokenizer, ft)
    # ELECTRA's head always answers and abstains through the answerability logit's threshold (-2.75);
    # HF's head already wrote "" where its null score won.
    thresh = 1.0 / (1.0 + math.exp(-ft.qa_na_threshold)) if ft.squad_head == "electra" else 1.0
    return {task.name: score(task, examples, preds, na_probs, thresh)}

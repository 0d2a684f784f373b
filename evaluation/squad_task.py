"""Fine-tune and score SQuAD 1.1 or 2.0 for one seed."""

from __future__ import annotations

from transformers import AutoModelForQuestionAnswering, default_data_collator, set_seed

from evaluation import squad_metrics
from evaluation.config import FinetuneConfig
from evaluation.finetune import ListDataset, LLRDTrainer, load_for_finetuning, training_args
from evaluation.qa_features import featurize
from evaluation.qa_postprocess import postprocess
from evaluation.squad_data import to_official
from evaluation.tasks import TaskSpec


def score(task: TaskSpec, examples: list[dict], preds: dict, na_probs: dict) -> dict[str, float]:
    data = to_official(examples)
    if task.squad_v2:
        out = squad_metrics.squad_v2(data, preds, na_probs)
        return {k: float(v) for k, v in out.items() if k in task.metrics}
    out = squad_metrics.squad_v1(data, preds)
    return {"exact": out["exact_match"], "f1": out["f1"]}


def run_squad_seed(task: TaskSpec, data: dict[str, list[dict]], model_dir: str, tokenizer, ft: FinetuneConfig, *,
                   lr: float, layer_decay: float, seed: int, use_cpu: bool) -> dict[str, dict[str, float]]:
    set_seed(seed)  # before the model exists: the seed must also pick the new head's initial weights
    model = load_for_finetuning(AutoModelForQuestionAnswering, model_dir)
    train_feats, _, _ = featurize(data["train"], tokenizer, ft)
    epochs = ft.epochs if ft.epochs is not None else task.epochs
    trainer = LLRDTrainer(model=model, args=training_args(ft, lr=lr, epochs=epochs, seed=seed, use_cpu=use_cpu),
                          train_dataset=ListDataset(train_feats), data_collator=default_data_collator,
                          layer_decay=layer_decay)
    trainer.train()
    examples = data["validation"]
    feats, owner, offsets = featurize(examples, tokenizer, ft)
    for f in feats:  # labels are meaningless at inference; dropping them skips the loss
        f.pop("start_positions"), f.pop("end_positions")
    start, end = trainer.predict(ListDataset(feats)).predictions[:2]
    preds, na_probs = postprocess(examples, owner, offsets, start, end, n_best=ft.n_best,
                                  max_answer_length=ft.max_answer_length, version_2=task.squad_v2)
    return {task.name: score(task, examples, preds, na_probs)}

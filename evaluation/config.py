"""Typed configuration of an evaluation run.

`EvalConfig` is what `python -m evaluation.run` parses its flags into and what flows build
directly. `FinetuneConfig` holds the ELECTRA fine-tuning recipe; fields left at None take
the per-size value of `recipe()`, so a default run follows the paper and a test or demo
shrinks it with `finetune.max_steps=3`-style overrides.
"""

from __future__ import annotations

import dataclasses

from common.configs import ConfigError
from evaluation.tiers import TIERS

HEADS = ("electra", "hf")  # task-head options: the official ELECTRA heads, or transformers' Auto* heads


@dataclasses.dataclass(frozen=True)
class SizeRecipe:
    """The ELECTRA fine-tuning hyperparameters that depend on model size (ELECTRA.md)."""

    learning_rate: float  # 1e-4 for small/base, 5e-5 for large
    layer_decay: float  # layer-wise LR decay: 0.8, 0.9 for large (24 layers need a gentler decay)


RECIPES = {
    "small": SizeRecipe(1e-4, 0.8),
    "base": SizeRecipe(1e-4, 0.8),
    "large": SizeRecipe(5e-5, 0.9),
}


def recipe(size: str) -> SizeRecipe:
    # Sizes the paper has no row for (tiny test models, custom widths) fine-tune like small/base.
    return RECIPES.get(size, RECIPES["small"])


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    learning_rate: float | None = None  # None: the size's recipe value
    layer_decay: float | None = None  # None: the size's recipe value; 1.0 turns the decay off
    epochs: float | None = None  # None: the task's ELECTRA default (3, 10 for RTE/STS-B, 2 for SQuAD)
    batch_size: int = 32  # ELECTRA default
    eval_batch_size: int = 64  # inference only; bigger is faster and changes nothing
    warmup_ratio: float = 0.1  # official warmup_proportion; turned into a step count (finetune.warmup_steps)
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    max_seq_length: int = 128  # GLUE; ELECTRA default
    squad_max_seq_length: int = 512  # SQuAD window length; ELECTRA default
    doc_stride: int = 128  # overlap between SQuAD windows of one long context
    max_query_length: int = 64  # SQuAD questions are cut to this many tokens
    n_best: int = 20  # official n_best_size / beam_size: start (and end per start) candidates per window
    max_answer_length: int = 30  # longest answer span in tokens, as in the official BERT/ELECTRA code
    qa_na_threshold: float = -2.75  # official: SQuAD 2.0 answers "" when the answerability logit is above this
    glue_head: str = "electra"  # "electra": dropout + one dense layer on [CLS] (official); "hf": HF's 2-layer head
    squad_head: str = "electra"  # "electra": official joint start/end + answerability head; "hf": HF's QA head
    double_unordered: bool = True  # MRPC/STS-B also train on (b, a) pairs, as the official ELECTRA code does
    max_steps: int = -1  # >0 caps optimizer steps (tests, demos); -1 trains the full epochs
    max_train_examples: int = 0  # >0 keeps the first N training examples (tests, demos)
    max_eval_examples: int = 0  # >0 keeps the first N dev examples (tests, demos)
    fp16: bool = False  # fp16 mixed precision on GPU, for GPUs without bf16
    bf16: bool | None = None  # None: bf16 autocast on a GPU that supports it, fp32 on CPU
    group_by_length: bool = True  # batches of similar length: with per-batch padding, less padding to compute
    progress_every_pct: float = 5.0  # a progress line every this many percent of a run's steps
    save_models: bool = False  # keep each fine-tuned model (config + weights + tokenizer) in the report dir

    def __post_init__(self):
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        for name in ("glue_head", "squad_head"):
            if getattr(self, name) not in HEADS:
                raise ConfigError(f"{name} must be one of {HEADS}, got {getattr(self, name)!r}")
        if not 0.0 < self.progress_every_pct <= 100.0:
            raise ConfigError(f"progress_every_pct must be in (0, 100], got {self.progress_every_pct}")

    def check(self) -> None:
        """Cross-field checks, run once all overrides are applied (one at a time they may pass through bad states)."""
        if self.doc_stride >= self.squad_max_seq_length - self.max_query_length - 3:
            raise ConfigError("doc_stride must leave room for the question: "
                              "doc_stride < squad_max_seq_length - max_query_length - 3")
        if self.fp16 and self.bf16:
            raise ConfigError("choose fp16 or bf16, not both")
        if self.n_best < 1 or self.max_answer_length < 1:
            raise ConfigError("n_best and max_answer_length must be >= 1")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    name: str = ""  # reports/<name>/...; empty: the model manifest's run name, else the model dir name
    regression_margin: float = 1.0  # flag a task whose primary score drops by more than this many points
    title: str = ""  # heading of report.md / report.html; empty: "Evaluation of <name>"
    pretrain_metrics: str = ""  # the run's metrics.jsonl; empty: found from the model manifest; "none": no curves


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    model: str  # model dir with discriminator/ (exporter layout) or a plain HF model dir; local or s3://
    output: str  # root URI; the report lands in <output>/reports/<name>/<timestamp>/
    tier: str = "full"  # "full": the paper's recipe on every task; "quick": the few-task check (evaluation/tiers.py)
    tasks: tuple[str, ...] = ()  # task names or groups (glue, squad); empty: the tier's tasks
    seeds: int = 0  # fine-tuning runs per task, the median is reported (variance is large); 0: the tier's
    data_dir: str = ""  # local or s3:// mirror in official formats; empty: HF hub datasets
    size: str = ""  # small/base/large; empty: from the model manifest, else guessed from hidden size
    seed_base: int = 1  # seeds are seed_base, seed_base+1, ...
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    device: str = "auto"  # "cpu" forces CPU; "auto" lets Trainer pick the accelerator

    def __post_init__(self):
        if self.seeds < 0:
            raise ConfigError(f"seeds must be >= 1 (0: the tier's), got {self.seeds}")
        if self.tier not in TIERS:
            raise ConfigError(f"tier must be one of {', '.join(TIERS)}, got {self.tier!r}")
        if not self.model or not self.output:
            raise ConfigError("model and output are required")
        if self.device not in ("auto", "cpu"):
            raise ConfigError(f"device must be 'auto' or 'cpu', got {self.device!r}")

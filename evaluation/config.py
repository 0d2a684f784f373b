"""Typed configuration of an evaluation run.

`EvalConfig` is what `python -m evaluation.run` parses its flags into and what flows build
directly. `FinetuneConfig` holds the ELECTRA fine-tuning recipe; fields left at None take
the per-size value of `recipe()`, so a default run follows the paper and a test or demo
shrinks it with `finetune.max_steps=3`-style overrides.
"""

from __future__ import annotations

import dataclasses

from common.configs import ConfigError


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
    warmup_ratio: float = 0.1  # fraction of steps with linear warmup, ELECTRA default
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    max_seq_length: int = 128  # GLUE; ELECTRA default
    squad_max_seq_length: int = 512  # SQuAD window length; ELECTRA default
    doc_stride: int = 128  # overlap between SQuAD windows of one long context
    max_query_length: int = 64  # SQuAD questions are cut to this many tokens
    n_best: int = 20  # start/end candidates per window considered in QA post-processing
    max_answer_length: int = 30  # longest answer span in tokens, as in the official BERT/ELECTRA code
    double_unordered: bool = True  # MRPC/STS-B also train on (b, a) pairs, as the official ELECTRA code does
    max_steps: int = -1  # >0 caps optimizer steps (tests, demos); -1 trains the full epochs
    max_train_examples: int = 0  # >0 keeps the first N training examples (tests, demos)
    max_eval_examples: int = 0  # >0 keeps the first N dev examples (tests, demos)
    fp16: bool = False  # mixed precision on GPU; CPU runs stay fp32
    bf16: bool = False  # bf16 on GPUs that have it

    def __post_init__(self):
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")

    def check(self) -> None:
        """Cross-field checks, run once all overrides are applied (one at a time they may pass through bad states)."""
        if self.doc_stride >= self.squad_max_seq_length - self.max_query_length - 3:
            raise ConfigError("doc_stride must leave room for the question: "
                              "doc_stride < squad_max_seq_length - max_query_length - 3")
        if self.fp16 and self.bf16:
            raise ConfigError("choose fp16 or bf16, not both")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    name: str = ""  # reports/<name>/...; empty: the model manifest's run name, else the model dir name
    regression_margin: float = 1.0  # flag a task whose primary score drops by more than this many points
    title: str = ""  # heading of report.md / report.html; empty: "Evaluation of <name>"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    model: str  # model dir with discriminator/ (exporter layout) or a plain HF model dir; local or s3://
    output: str  # root URI; the report lands in <output>/reports/<name>/<timestamp>/
    tasks: tuple[str, ...] = ("glue", "squad_v1", "squad_v2")  # task names or groups (glue, squad)
    seeds: int = 3  # fine-tuning runs per task; the median is reported (variance is large)
    data_dir: str = ""  # local or s3:// mirror in official formats; empty: HF hub datasets
    size: str = ""  # small/base/large; empty: from the model manifest, else guessed from hidden size
    seed_base: int = 1  # seeds are seed_base, seed_base+1, ...
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    device: str = "auto"  # "cpu" forces CPU; "auto" lets Trainer pick the accelerator

    def __post_init__(self):
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if not self.model or not self.output:
            raise ConfigError("model and output are required")
        if self.device not in ("auto", "cpu"):
            raise ConfigError(f"device must be 'auto' or 'cpu', got {self.device!r}")

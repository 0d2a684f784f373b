"""Fine-tuning machinery shared by every task: ELECTRA's recipe on top of transformers.Trainer.

The loop, scheduler (linear decay after a linear warmup), devices and mixed precision are
Trainer's. This module supplies what the recipe needs beyond that: the layer-wise learning rates,
the step count and the warmup as a number of steps (computed here from the ratio, so it means
the same in every transformers version), batches padded to their longest sequence (grouped by
length), bf16 on GPUs that have it, and the progress callback.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile

import numpy as np
import torch
from transformers import PrinterCallback, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from evaluation.config import FinetuneConfig
from evaluation.model_io import ModelError

log = logging.getLogger("evaluation")

_LAYER = re.compile(r"\.encoder\.layer\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")  # ELECTRA/BERT exclude these from weight decay


def load_for_finetuning(model_class, model_dir: str, **kwargs) -> torch.nn.Module:
    """`model_class.from_pretrained` (an ELECTRA head of evaluation/heads.py or an HF Auto class) where only the
    new task head may start from random weights.

    transformers reports fresh weights as a warning table on every load (for fine-tuning the head
    is always new). Here that is checked instead: a missing or mis-shaped encoder tensor means the
    directory is not the pretrained discriminator, and fine-tuning it would only report noise.
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    base = model.base_model_prefix + "."
    encoder_missing = [k for k in info.get("missing_keys", ()) if k.startswith(base)]
    mismatched = [str(k) for k in info.get("mismatched_keys", ())]
    if encoder_missing or mismatched:
        shown = (encoder_missing + mismatched)[:5]
        raise ModelError(f"{model_dir}: {len(encoder_missing)} encoder tensors missing and {len(mismatched)} of the "
                         f"wrong shape (e.g. {', '.join(shown)}); point --model at an exported discriminator")
    head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(base))
    log.info("%s: encoder loaded; new %s head initialised (%s)", model_dir, type(model).__name__, ", ".join(head))
    return model


def layer_depth(param_name: str, num_layers: int) -> int:
    """Depth as the official ELECTRA code counts it: embeddings 0, layer i -> i+1, task head n+2."""
    if ".embeddings" in param_name or param_name.startswith("embeddings"):
        return 0  # covers embeddings_project too
    m = _LAYER.search("." + param_name)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 2


def llrd_param_groups(model: torch.nn.Module, lr: float, decay: float, weight_decay: float) -> list[dict]:
    """One group per (depth, decays?) with lr * decay ** (n_layers + 2 - depth)."""
    n = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = layer_depth(name, n)
        decays = not any(k in name for k in _NO_DECAY)
        g = groups.setdefault((depth, decays), {
            "params": [], "names": [], "lr": lr * decay ** (n + 2 - depth),
            "weight_decay": weight_decay if decays else 0.0})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


class LLRDTrainer(Trainer):
    """Trainer whose AdamW gets ELECTRA's layer-wise learning rates (the scheduler scales each group)."""

    def __init__(self, *args, layer_decay: float = 0.8, **kwargs):
        self.layer_decay = layer_decay
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            a = self.args
            groups = llrd_param_groups(model or self.model, a.learning_rate, self.layer_decay, a.weight_decay)
            for g in groups:
                g.pop("names")
            self.optimizer = torch.optim.AdamW(groups, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2),
                                               eps=a.adam_epsilon)
        return self.optimizer


def train_steps(n_examples: int, ft: FinetuneConfig, epochs: float, cap: int = -1) -> int:
    """Optimizer steps of one run: `epochs` passes in batches of `ft.batch_size` (the last one partial, as
    Trainer counts them), cut to `ft.max_steps` or else to the tier's `cap` when those are > 0."""
    steps = max(1, math.ceil(epochs * math.ceil(n_examples / ft.batch_size)))
    limit = ft.max_steps if ft.max_steps > 0 else cap
    return min(steps, limit) if limit > 0 else steps


def warmup_steps(total: int, ratio: float) -> int:
    """Linear-warmup steps: the official `warmup_proportion` of the run, rounded up (>= 1 when ratio > 0)."""
    return math.ceil(total * ratio)


def use_bf16(ft: FinetuneConfig, use_cpu: bool) -> bool:
    """bf16 autocast on a GPU that supports it unless the config says otherwise; fp32 on CPU."""
    if ft.bf16 is not None:
        return ft.bf16
    return not use_cpu and not ft.fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_args(ft: FinetuneConfig, *, lr: float, steps: int, seed: int, use_cpu: bool, log_every: int = 1,
                  output_dir: str | None = None) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="eval-ft-"),
        learning_rate=lr,
        max_steps=steps,  # the run's length, computed by train_steps(); Trainer cycles epochs up to it
        per_device_train_batch_size=ft.batch_size,
        per_device_eval_batch_size=ft.eval_batch_size,
        warmup_steps=warmup_steps(steps, ft.warmup_ratio),  # an int: steps in transformers 4 and 5 alike
        weight_decay=ft.weight_decay,
        adam_epsilon=1e-6,  # ELECTRA's AdamW epsilon
        lr_scheduler_type="linear",
        seed=seed,
        save_strategy="no",  # checkpoints of a run are not kept; finetune.save_models keeps the final model
        report_to="none",
        logging_strategy="steps",  # feeds the progress callback (running loss) every `log_every` steps
        logging_steps=max(1, log_every),
        disable_tqdm=True,
        use_cpu=use_cpu,
        fp16=ft.fp16,
        bf16=use_bf16(ft, use_cpu),
        train_sampling_strategy="group_by_length" if ft.group_by_length else "random",
        dataloader_num_workers=0,
    )


class PadCollator:
    """Pads each batch to its longest sequence instead of every example to the maximum length.

    Sequence fields (lists or arrays: ids, masks, token types, context mask) are right-padded with
    `pad_id` for input ids and 0 elsewhere; scalar fields (labels, positions) become tensors.
    `multiple_of` rounds the padded length up (8 keeps GPU tensor-core tiles full).
    """

    def __init__(self, pad_id: int = 0, multiple_of: int = 1):
        self.pad_id, self.multiple_of = pad_id, max(1, multiple_of)

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        out = {}
        for key in feats[0]:
            values = [f[key] for f in feats]
            if isinstance(values[0], (list, np.ndarray)):
                length = max(len(v) for v in values)
                length = -(-length // self.multiple_of) * self.multiple_of
                fill = self.pad_id if key == "input_ids" else 0
                batch = np.full((len(values), length), fill, dtype=np.int64)
                for i, v in enumerate(values):
                    batch[i, :len(v)] = v
                out[key] = torch.from_numpy(batch)
            else:
                out[key] = torch.tensor(values)
        return out


def make_trainer(model: torch.nn.Module, train: list[dict], ft: FinetuneConfig, *, lr: float, layer_decay: float,
                 steps: int, seed: int, use_cpu: bool, pad_id: int, progress=None) -> "LLRDTrainer":
    """The Trainer of one fine-tuning run; `progress` (a TrainerCallback) gets its log events."""
    every = progress.interval(steps) if progress is not None else steps
    args = training_args(ft, lr=lr, steps=steps, seed=seed, use_cpu=use_cpu, log_every=every)
    collate = PadCollator(pad_id, multiple_of=1 if use_cpu else 8)
    trainer = LLRDTrainer(model=model, args=args, train_dataset=ListDataset(train), data_collator=collate,
                          layer_decay=layer_decay, callbacks=[progress] if progress is not None else None)
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the progress callback writes lines
    return trainer


class ListDataset(torch.utils.data.Dataset):
    """Features as a list of dicts (what the tokenizer gave), for Trainer's dataloader."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

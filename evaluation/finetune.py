"""Fine-tuning machinery shared by every task: ELECTRA's layer-wise LR decay on top of Trainer.

The loop, scheduler (linear decay with 10% warmup), batching, devices and mixed precision are
transformers.Trainer's; this module only supplies the optimizer param groups the ELECTRA recipe
needs and the TrainingArguments of the recipe.
"""

from __future__ import annotations

import logging
import re
import tempfile

import torch
from transformers import Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from evaluation.config import FinetuneConfig
from evaluation.model_io import ModelError

log = logging.getLogger("evaluation")

_LAYER = re.compile(r"\.encoder\.layer\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")  # ELECTRA/BERT exclude these from weight decay


def load_for_finetuning(auto_class, model_dir: str, **kwargs) -> torch.nn.Module:
    """`auto_class.from_pretrained` where only the new task head may start from random weights.

    transformers reports fresh weights as a warning table on every load (for fine-tuning the head
    is always new). Here that is checked instead: a missing or mis-shaped encoder tensor means the
    directory is not the pretrained discriminator, and fine-tuning it would only report noise.
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
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


def training_args(ft: FinetuneConfig, *, lr: float, epochs: float, seed: int, use_cpu: bool,
                  output_dir: str | None = None) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="eval-ft-"),
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=ft.max_steps,
        per_device_train_batch_size=ft.batch_size,
        per_device_eval_batch_size=ft.eval_batch_size,
        warmup_steps=ft.warmup_ratio,  # a float < 1 is a fraction of the total steps
        weight_decay=ft.weight_decay,
        adam_epsilon=1e-6,  # ELECTRA's AdamW epsilon
        lr_scheduler_type="linear",
        seed=seed,
        save_strategy="no",  # fine-tuned weights are not kept: the report is the product
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=use_cpu,
        fp16=ft.fp16,
        bf16=ft.bf16,
        dataloader_num_workers=0,
    )


class ListDataset(torch.utils.data.Dataset):
    """Features as a list of dicts (what the tokenizer gave), for Trainer's dataloader."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

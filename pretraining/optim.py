"""AdamW parameter groups, the DeepSpeed optimizer section, and the warmup + linear-decay schedule."""

from __future__ import annotations

import torch

from pretraining.config import OptimConfig, ScheduleConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: LayerNorm weights and all biases (every 1-D tensor) are excluded, as in BERT/ELECTRA.

    Shared parameters (the embeddings both towers use) appear once: `named_parameters` de-duplicates.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_norm = "layernorm" in name.lower() or "layer_norm" in name.lower() or "norm." in name.lower()
        (no_decay if p.ndim < 2 or name.endswith(".bias") or is_norm else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def ds_optimizer_section(cfg: OptimConfig, *, on_cpu: bool, offload: bool = False) -> dict:
    """The ds_config `optimizer` block: which AdamW implementation DeepSpeed builds.

    - optimizer states offloaded to CPU: DeepSpeed's CPU Adam (the only one ZeRO-Offload steps with);
    - `optim.implementation=torch` (default): torch's AdamW, fused on GPU. As fast as DeepSpeed's
      FusedAdam and needs no CUDA toolkit: FusedAdam is compiled on first use with nvcc, which
      many training images (pip-installed torch) do not have;
    - `optim.implementation=deepspeed` on GPU: DeepSpeed's FusedAdam.
    """
    params = {"lr": cfg.lr, "betas": [cfg.beta1, cfg.beta2], "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if on_cpu or (cfg.implementation == "torch" and not offload):
        params["torch_adam"] = True
        if not on_cpu:
            params["fused"] = True  # one kernel for all tensors (torch.optim.AdamW(fused=True))
    return {"type": "AdamW", "params": params}


def lr_lambda(schedule: ScheduleConfig, max_steps: int):
    """Multiplier of the peak lr after `step` optimizer steps: linear warmup, then linear decay to the final fraction."""
    warm = schedule.warmup_steps
    end = schedule.final_lr_fraction

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm  # the first step already trains (lr/warm), as in the reference code
        span = max(1, max_steps - warm)
        frac = min(1.0, (step - warm) / span)
        return 1.0 - (1.0 - end) * frac

    return f


def scheduler_factory(schedule: ScheduleConfig, max_steps: int):
    """A callable DeepSpeed calls with the optimizer it built; its state is saved in every checkpoint."""
    fn = lr_lambda(schedule, max_steps)
    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, fn)

"""Training FLOPs per token and MFU, by the cost model in `../shared/reference/ELECTRA.md`.

    FLOPs/token = 6 x (non-embedding matmul parameters touched per token)
                + 12 x seq_len x hidden x layers            (attention scores and their use)
summed over both towers, with the generator head counted only at the masked positions.
Embedding lookups, LayerNorm, softmax and the loss are left out, as in the usual 6N accounting.
ELECTRA-Large at 512 with the paper's 30522 vocabulary: 1.97 (discriminator) + 0.20 (generator)
= 2.17 GFLOP/token; 2.31 if the generator head ran on every position.

    fpt = flops_per_token(electra_large(), 512)
    mfu(tokens_per_s=200_000, flops_per_token=fpt, peak_flops=PEAK_FLOPS["h100-sxm-bf16"])
"""

from __future__ import annotations

from pretraining.sizes import ModelConfig

# Dense (no sparsity) peak FLOP/s from the vendors' datasheets. MFU is quoted against these.
PEAK_FLOPS: dict[str, float] = {
    "h100-sxm-bf16": 989e12,
    "h100-pcie-bf16": 756e12,
    "h100-nvl-bf16": 835e12,
    "h200-bf16": 989e12,  # same compute as H100 SXM, more and faster memory
    "a100-bf16": 312e12,
    "l40s-bf16": 362e12,
    "a10g-bf16": 70e12,
}

# Substrings of torch.cuda.get_device_name() -> PEAK_FLOPS key; more specific names first.
_DEVICE_NAMES = (
    ("h100 nvl", "h100-nvl-bf16"),
    ("h100 pcie", "h100-pcie-bf16"),
    ("h100", "h100-sxm-bf16"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("h200", "h200-bf16"),
    ("a100", "a100-bf16"),
    ("l40s", "l40s-bf16"),
    ("a10g", "a10g-bf16"),
)


def _tower_flops(hidden: int, ffn: int, layers: int, seq_len: int) -> float:
    """Forward+backward FLOPs per token of one encoder stack."""
    matmul_params = layers * (4 * hidden * hidden + 2 * hidden * ffn)  # q, k, v, out; FFN in and out
    return 6.0 * matmul_params + 12.0 * seq_len * hidden * layers


def flops_per_token(cfg: ModelConfig, seq_len: int, masked_fraction: float | None = None,
                    gen_head_all_positions: bool = False) -> float:
    """Training FLOPs per input position (padding included: the model computes on it).

    `masked_fraction` defaults to the config's mask_prob; `gen_head_all_positions` prices the
    head the way stock `ElectraForMaskedLM` runs it, to show what gathering the masked positions saves.
    """
    frac = cfg.mask_prob if masked_fraction is None else masked_fraction
    head_frac = 1.0 if gen_head_all_positions else frac
    e, h, g = cfg.embedding_size, cfg.hidden_size, cfg.generator_hidden_size

    disc = _tower_flops(h, cfg.intermediate_size, cfg.num_hidden_layers, seq_len)
    disc += 6.0 * (h * h + h)  # discriminator head: dense + one-logit projection, every position
    if e != h:
        disc += 6.0 * e * h  # embeddings_project

    gen = _tower_flops(g, cfg.generator_intermediate_size, cfg.num_hidden_layers, seq_len)
    if e != g:
        gen += 6.0 * e * g
    gen += 6.0 * head_frac * (g * e + e * cfg.vocab_size)  # head dense + tied vocabulary projection
    return disc + gen


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak (0.5 = 50%)."""
    return tokens_per_s * flops_per_token / peak_flops


def peak_flops_for_device(device_name: str | None = None) -> float | None:
    """Dense bf16 peak of the current (or named) CUDA device; None on CPU or an unknown GPU."""
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    low = device_name.lower()
    for needle, key in _DEVICE_NAMES:
        if needle in low:
            return PEAK_FLOPS[key]
    return None


def encoder_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token of the discriminator alone (what fine-tuning trains); a forward pass is a third."""
    return _tower_flops(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, seq_len)

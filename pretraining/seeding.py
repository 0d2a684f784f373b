"""Seeds as pure functions of integers, so a resumed run draws exactly what the uninterrupted one did."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers; nearby inputs give unrelated seeds."""
    h = hashlib.blake2b(b",".join(str(int(p)).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)

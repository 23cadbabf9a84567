"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr_ratio`` or constant.

The multiplier is a pure function of the step, so a resumed run has exactly the same learning rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gigaworld_policy.config import TrainConfig


def lr_multiplier(tc: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """step (0-based, the optimizer step about to be taken) -> multiplier of ``tc.lr``."""
    warmup = max(0, int(tc.warmup_steps))
    total = max(1, int(total_steps))

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if tc.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def build_optimizer(params: list[torch.nn.Parameter], tc: TrainConfig, device: torch.device
                    ) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and 1-d tables; fused kernels on CUDA."""
    decay = [p for p in params if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in params if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas), fused=device.type == "cuda" or None)


def build_scheduler(opt: torch.optim.Optimizer, tc: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(tc, total_steps))

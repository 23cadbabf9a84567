"""Exponential moving average of the weights, kept in fp32 (used for evaluation and export).

Works on plain, DDP and FSDP2 models alike: the shadow copies mirror ``model.named_parameters()``, so
under FSDP2 each rank averages its own shards (DTensors) and :meth:`full_state_dict` gathers them.
"""

from __future__ import annotations

import torch
from torch import nn


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """shadow <- d * shadow + (1 - d) * weights, with the usual warm-up d = min(decay, (1+n)/(10+n))."""
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - d)

    def full_state_dict(self, model_keys: list[str], strip: str = "") -> dict[str, torch.Tensor]:
        """Parameters gathered to full fp32 tensors on CPU (collective under FSDP2: call on every rank)."""
        out = {}
        for name, t in self.shadow.items():
            out[name.removeprefix(strip)] = _full(t).detach().cpu()
        return {k: out[k] for k in model_keys if k in out}

    def load_full_state_dict(self, weights: dict[str, torch.Tensor], strip: str = "") -> None:
        """Load full tensors (from ema.safetensors) into the shadow copies (slicing into local shards)."""
        for name, t in self.shadow.items():
            key = name.removeprefix(strip)
            if key not in weights:
                raise KeyError(f"ema.safetensors: missing tensor {key!r}")
            src = weights[key].float()
            if hasattr(t, "full_tensor"):  # DTensor: take this rank's shard of the full tensor
                from torch.distributed.tensor import distribute_tensor
                t.copy_(distribute_tensor(src.to(t.device), t.device_mesh, t.placements))
            else:
                if tuple(src.shape) != tuple(t.shape):
                    raise ValueError(f"ema.safetensors: tensor {key!r} has shape {list(src.shape)}, "
                                     f"the model expects {list(t.shape)}")
                t.copy_(src)

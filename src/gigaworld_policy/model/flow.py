"""Rectified flow matching, kept outside the network (as DiT keeps diffusion out of its model).

Noise process (DESIGN.md "Flow matching"): s ~ U(0, 1), shifted sigma = k s / (1 + (k - 1) s),
x_sigma = sigma * noise + (1 - sigma) * x0, target velocity v = noise - x0. Sampling integrates
dx/dsigma = v from sigma = 1 (pure noise) to 0 with Euler steps on the same shifted schedule.
Timesteps given to the network are sigma * 1000 (Wan's convention).

Legend: b batch, t action steps, a action dims, n any trailing dims.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000.0


def shift_sigma(s: torch.Tensor, shift: float) -> torch.Tensor:
    """Time shift k s / (1 + (k - 1) s): k > 1 spends more of training/sampling at high noise."""
    return shift * s / (1.0 + (shift - 1.0) * s)


def sample_sigma(batch_size: int, shift: float, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Training noise levels [b] in (0, 1)."""
    s = torch.rand(batch_size, generator=generator, device="cpu" if generator is None else generator.device)
    return shift_sigma(s, shift).to(device)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma = sigma * noise + (1 - sigma) * x0, sigma [b] broadcast over the trailing dims."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return s * noise + (1.0 - s) * x0


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the elements where ``mask`` is True (broadcast to pred); 0 if none."""
    err = (pred.float() - target.float()).square()
    if mask is None:
        return err.mean()
    mask = mask.expand_as(err).to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def sigma_schedule(num_steps: int, shift: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sampling noise levels [num_steps + 1], from 1 down to 0, on the shifted schedule."""
    if num_steps < 1:
        raise ValueError(f"num_steps: must be >= 1, got {num_steps}")
    return shift_sigma(torch.linspace(1.0, 0.0, num_steps + 1, device=device), shift)


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma: float | torch.Tensor,
               sigma_next: float | torch.Tensor) -> torch.Tensor:
    """One Euler step of dx/dsigma = v from ``sigma`` to ``sigma_next``."""
    return x + (sigma_next - sigma) * velocity

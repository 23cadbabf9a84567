"""Training: ``train(cfg, data_sources, steps, out_dir, ...)``, checkpoints with resumable state, evaluation.

Modules: trainer (loop, run directory), distributed (torchrun, DDP, FSDP2), data (mixtures, held-out
episodes, step-indexed sample stream), batches, state (optimizer/RNG as safetensors + JSON), ema, schedule,
init (--init / --init-wan), evaluation (open-loop on held-out episodes), plots, cli.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainSummary", "plot_loss_curves", "train"]


def __getattr__(name: str) -> Any:  # torch loads on first use
    if name in ("train", "TrainSummary"):
        from gigaworld_policy.train import trainer

        return getattr(trainer, name)
    if name == "plot_loss_curves":
        from gigaworld_policy.train.plots import plot_loss_curves

        return plot_loss_curves
    raise AttributeError(f"module 'gigaworld_policy.train' has no attribute {name!r}")

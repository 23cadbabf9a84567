"""Per-step batch providers for the trainer: LeRobot mixtures, or synthetic batches for tests/benchmarks.

Both yield, for each optimizer step, this rank's list of micro-batches (gradient accumulation); what a
step sees is a pure function of (seed, step, rank) — see data.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from gigaworld_policy.config import Config
from gigaworld_policy.model.batch import Batch, example_batch
from gigaworld_policy.train.data import Split, StepBatchSampler, derive_seed, make_loader


class BatchProvider(Protocol):
    def steps(self, start: int, stop: int) -> Iterator[list[Batch]]: ...

    def sampler_state(self, next_step: int) -> dict[str, Any]: ...

    def check_sampler_state(self, state: dict[str, Any], where: str) -> None: ...


def _micro(n: int, accum: int, where: str) -> int:
    if n % accum:
        raise ValueError(f"{where}: per-rank batch {n} is not divisible by grad_accum={accum}")
    return n // accum


class DatasetBatches:
    def __init__(self, dataset: Any, split: Split, cfg: Config, *, rank: int, world_size: int, grad_accum: int,
                 num_workers: int) -> None:
        self.dataset, self.split, self.cfg = dataset, split, cfg
        self.rank, self.world_size, self.accum, self.num_workers = rank, world_size, grad_accum, num_workers
        _micro(cfg.train.batch_size // world_size, grad_accum, "train.batch_size")

    def _sampler(self, start: int, stop: int) -> StepBatchSampler:
        return StepBatchSampler(self.split, seed=self.cfg.train.seed, global_batch=self.cfg.train.batch_size,
                                rank=self.rank, world_size=self.world_size, start_step=start, stop_step=stop)

    def steps(self, start: int, stop: int) -> Iterator[list[Batch]]:
        for batch in make_loader(self.dataset, self._sampler(start, stop), self.num_workers):
            n = batch["state"].shape[0]
            m = n // self.accum
            yield [{k: v[i * m:(i + 1) * m] for k, v in batch.items()} for i in range(self.accum)]

    def sampler_state(self, next_step: int) -> dict[str, Any]:
        return {"kind": "step_indexed", "next_step": next_step, "seed": self.cfg.train.seed,
                "global_batch": self.cfg.train.batch_size, "fingerprint": self.split.fingerprint()}

    def check_sampler_state(self, state: dict[str, Any], where: str) -> None:
        mine = self.sampler_state(state.get("next_step", 0))
        for key in ("kind", "seed", "global_batch", "fingerprint"):
            if state.get(key) != mine[key]:
                raise ValueError(f"{where}: sampler.{key}={state.get(key)!r} but this run has {mine[key]!r} "
                                 f"(different data, seed or batch size: the resumed stream would differ)")


class SyntheticBatches:
    """``model.example_batch`` tensors seeded by (seed, step, global micro-batch index); ``latents``: batches
    as the latent cache gives them (latents instead of pixels: the tokenizer never runs)."""

    def __init__(self, cfg: Config, *, rank: int, world_size: int, grad_accum: int, device: torch.device,
                 latents: bool = False) -> None:
        self.cfg, self.rank, self.world_size, self.accum, self.device = cfg, rank, world_size, grad_accum, device
        self.latents = latents
        self.micro = _micro(cfg.train.batch_size // world_size, grad_accum, "train.batch_size")

    def steps(self, start: int, stop: int) -> Iterator[list[Batch]]:
        for step in range(start, stop):
            out = []
            for k in range(self.accum):
                g = torch.Generator().manual_seed(derive_seed(self.cfg.train.seed, step, 4, self.rank * self.accum + k))
                out.append(example_batch(self.cfg.model, self.micro, training=True, generator=g, latents=self.latents))
            yield out

    def sampler_state(self, next_step: int) -> dict[str, Any]:
        return {"kind": "synthetic", "next_step": next_step, "seed": self.cfg.train.seed,
                "global_batch": self.cfg.train.batch_size}

    def check_sampler_state(self, state: dict[str, Any], where: str) -> None:
        for key in ("kind", "seed", "global_batch"):
            if state.get(key) != self.sampler_state(0)[key]:
                raise ValueError(f"{where}: sampler.{key}={state.get(key)!r} differs from this run")

"""`gwp bench train`: training throughput (samples/s, tokens/s; on CUDA also memory per GPU and MFU).

Synthetic batches from ``model.example_batch`` (no data loading), the real trainer step (forward,
backward, clipping, AdamW, EMA). Reports the median of ``--steps`` timed steps after ``--warmup``.
``--latents``: batches carry latents as from ``gwp cache-latents`` (the frozen VAE encoder leaves the step).
CPU: ``gwp bench train --preset cpu-small``. GPUs (FSDP2 presets, one process per GPU)::

  torchrun --nproc_per_node 8 -m gigaworld_policy.cli bench train --preset wan2.2-5b --device cuda

MFU counts 6 * parameters * tokens per step (forward + backward, attention FLOPs excluded) against
``--peak-tflops`` per GPU (default 989, H100 SXM dense bf16).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import TYPE_CHECKING

from gigaworld_policy.provenance import git_commit

if TYPE_CHECKING:
    from gigaworld_policy.train.trainer import Trainer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU peak for MFU")
    p.add_argument("--json", default=None, help="also write the result to this file")
    p.add_argument("--vae", default=None, help="Wan 2.2 VAE directory for wan2.2-vae presets (default: the "
                   "architecture with random weights; the VAE encodes every sample's frames inside the step)")
    p.add_argument("--latents", action="store_true",
                   help="batches carry latents, as with gwp train --latent-cache: the tokenizer (VAE) never runs")


def time_train_steps(trainer: Trainer, steps: int, warmup: int, latents: bool = False) -> list[float]:
    """Seconds per full trainer step (forward, backward, clip, AdamW, EMA) on synthetic batches, after
    ``warmup`` untimed steps. Also what ``gwp demo`` uses to fit its schedule to a time budget.
    ``latents``: cached-latent batches (no tokenizer in the step)."""
    import torch

    from gigaworld_policy.train.batches import SyntheticBatches

    cfg, info = trainer.cfg, trainer.info
    batches = SyntheticBatches(cfg, rank=info.rank, world_size=info.world_size, grad_accum=1, device=info.device,
                               latents=latents)
    sync = torch.cuda.synchronize if info.device.type == "cuda" else (lambda: None)
    times = []
    for i, micro in enumerate(batches.steps(0, warmup + steps)):
        sync()
        t = time.perf_counter()
        trainer.train_step(micro)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def run(args: argparse.Namespace) -> int:
    import torch

    from gigaworld_policy.config import apply_overrides, get_preset
    from gigaworld_policy.train.distributed import init_distributed, shutdown_distributed
    from gigaworld_policy.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    info = init_distributed(args.device)
    from gigaworld_policy.model.wan import video_tokenizer_for

    tokenizer = video_tokenizer_for(cfg.model, args.vae, device=info.device, allow_random=True)
    trainer = Trainer(cfg, info, total_steps=args.warmup + args.steps, video_tokenizer=tokenizer)
    m = cfg.model
    tokens_per_sample = 1 + m.num_reference_tokens + m.action_horizon + m.num_future_tokens
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if info.world_size > 1:  # FSDP: local shards; count the global size
        n_params = sum(p.full_tensor().numel() if hasattr(p, "full_tensor") else p.numel()
                       for p in trainer.model.parameters())
    times = time_train_steps(trainer, args.steps, args.warmup, latents=args.latents)
    cuda = info.device.type == "cuda"
    step_s = statistics.median(times)
    b = cfg.train.batch_size
    out = {"preset": cfg.name, "device": str(info.device), "world_size": info.world_size, "batch_size": b,
           "tokens_per_sample": tokens_per_sample, "parameters": n_params, "threads": torch.get_num_threads(),
           "step_s_median": step_s, "step_s_min": min(times), "samples_per_s": b / step_s,
           "tokens_per_s": b * tokens_per_sample / step_s, "strategy": "fsdp" if trainer.fsdp else "ddp/plain",
           "inputs": "cached latents" if args.latents else "pixels (tokenizer in the step)",
           "git_commit": git_commit()}
    if cuda:
        out["max_memory_gib_per_gpu"] = torch.cuda.max_memory_allocated() / 2**30
        flops = 6.0 * n_params * b * tokens_per_sample / step_s
        out["mfu"] = flops / (info.world_size * args.peak_tflops * 1e12)
    if info.is_main:
        print(json.dumps(out, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2)
    shutdown_distributed()
    return 0


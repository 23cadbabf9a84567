"""Process groups and model wrapping on PyTorch's own engine (launch with ``torchrun``).

- One process: no process group, the model as is.
- ``WORLD_SIZE > 1`` (set by torchrun with RANK, LOCAL_RANK, MASTER_ADDR/PORT): gloo on CPU, nccl on GPU.
- DDP for small models. The per-embodiment MLPs leave the other embodiments' rows without gradients in
  a batch, so DDP runs with ``find_unused_parameters=True``.
- FSDP2 (``fully_shard``, see :func:`shard_model`); parameters in bf16 and gradient reduction in fp32
  on CUDA.
  Large presets are built on the meta device, sharded, then materialized with ``to_empty`` + init.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from gigaworld_policy.config import Config


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} (set by torchrun) is not an integer") from None


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (if any) and pick this rank's device."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=30),
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= info.world_size
    return x


def use_fsdp(cfg: Config) -> bool:
    strategy = cfg.train.strategy
    return strategy == "fsdp" or (strategy == "auto" and cfg.train.fsdp)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA with mixed_precision='auto'; fp32 (None) on CPU (bf16 is slower there)."""
    mp = cfg.train.mixed_precision
    if mp == "bf16" or (mp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    blocks = list(model.blocks)
    if getattr(model, "is_mot", False):
        blocks += list(model.action_blocks)
    return blocks


class LossModule(nn.Module):
    """``forward(batch, generator)`` = ``model.compute_loss``: the call DDP and FSDP2 hook into.

    DDP synchronizes gradients and FSDP2 all-gathers parameters only around ``forward``; the model's
    loss is a method that embeds the context before calling the transformer, so the trainer calls this
    wrapper instead. Parameter names are the model's with a ``model.`` prefix.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        return self.model.compute_loss(batch, generator)

    @property
    def cfg(self) -> object:
        return self.model.cfg

    def predict_actions(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.model.predict_actions(*args, **kwargs)

    def generate(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.generate(*args, **kwargs)


def wrap_model(model: nn.Module, cfg: Config, info: DistInfo) -> nn.Module:
    """LossModule(model), under DDP or FSDP2 as configured (plain when alone without FSDP)."""
    wrapped = LossModule(model)
    if use_fsdp(cfg):
        return shard_model(wrapped, cfg, info)
    if not info.distributed:
        return wrapped
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(wrapped, device_ids=ids, find_unused_parameters=True)


def shard_model(wrapped: LossModule, cfg: Config, info: DistInfo) -> nn.Module:
    """FSDP2 over ``LossModule(model)``: every transformer block its own unit, then the rest as the root.

    Each block's parameters are all-gathered just before the block runs and resharded right after it
    (and again in backward), so only one block is ever unsharded per rank beyond the root's small
    modules (embeddings, encoders, heads). The per-layer computation enters through each block's
    ``__call__`` (``WanBlock.forward``), which is where FSDP2's hooks fire; a Mixture-of-Transformers
    layer enters ``blocks[i]`` and ``action_blocks[i]``, two units. ``predict_actions``/``generate`` are
    registered as forward methods of the root for evaluation.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    if not dist.is_initialized():  # FSDP needs a process group, even for one process
        dist.init_process_group("nccl" if info.device.type == "cuda" else "gloo", rank=0, world_size=1,
                                store=dist.HashStore())
    dt = autocast_dtype(cfg, info.device)
    mp = MixedPrecisionPolicy(param_dtype=dt, reduce_dtype=torch.float32) if dt is not None else MixedPrecisionPolicy()
    for block in transformer_blocks(wrapped.model):
        fully_shard(block, mp_policy=mp)
    fully_shard(wrapped, mp_policy=mp)
    for name in ("predict_actions", "generate"):
        register_fsdp_forward_method(wrapped, name)
    return wrapped


def unwrap(wrapped: nn.Module) -> nn.Module:
    """The WorldActionModel inside DDP(LossModule(model)) / LossModule(model)."""
    m = wrapped.module if hasattr(wrapped, "module") and isinstance(wrapped.module, nn.Module) else wrapped
    return m.model if isinstance(m, LossModule) else m


def build_model(cfg: Config, info: DistInfo) -> nn.Module:
    """``LossModule(WorldActionModel)`` on this rank's device, wrapped for the configured strategy.

    FSDP presets are built on ``meta`` (no memory), sharded, then materialized shard by shard and
    initialized; ``init_non_persistent_buffers`` rebuilds the RoPE tables afterwards.
    """
    from gigaworld_policy.model.world_action_model import WorldActionModel

    if use_fsdp(cfg):
        with torch.device("meta"):
            model = WorldActionModel(cfg)
        wrapped = shard_model(LossModule(model), cfg, info)
        wrapped.to_empty(device=info.device)
        _init_weights(model, seed=cfg.train.seed)
        model.init_non_persistent_buffers(info.device)
        return wrapped
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = WorldActionModel(cfg).to(info.device)
    return wrap_model(model, cfg, info)


@torch.no_grad()
def _init_weights(model: nn.Module, seed: int) -> None:
    """Re-run every submodule's ``reset_parameters`` (then the model's own head init) after ``to_empty``.

    Under FSDP2 parameters are DTensors; the init functions act on each rank's local shard with the
    same seed on every rank, so shards are initialized independently (a different but equally valid
    draw from the same distribution). Fine-tuning overwrites them from a checkpoint anyway.
    """
    torch.manual_seed(seed)
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for name, p in model.named_parameters(recurse=True):
        if name.endswith("scale_shift_table"):
            p.normal_(0.0, p.shape[-1] ** -0.5)
    model._init_new_modules()

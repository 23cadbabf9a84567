"""FSDP2 shards per transformer block: at any moment of the forward only the running layer's blocks are
gathered (the rest stay sharded DTensors), and every block still receives gradients."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from conftest import tiny_config
from gigaworld_policy.model import WorldActionModel
from gigaworld_policy.train.distributed import (
    DistInfo,
    LossModule,
    shard_model,
    shutdown_distributed,
    transformer_blocks,
)


@pytest.mark.parametrize("mot", [False, True], ids=["dense", "mot"])
def test_fsdp_gathers_one_layer_at_a_time(mot: bool) -> None:
    extra = ["model.action_expert_dim=32", "model.action_expert_ffn_dim=64"] if mot else []
    cfg = tiny_config("train.strategy=fsdp", "model.num_layers=3", *extra)
    torch.manual_seed(0)
    model = WorldActionModel(cfg)
    assert not dist.is_initialized()
    try:
        wrapped = shard_model(LossModule(model), cfg, DistInfo(0, 1, 0, torch.device("cpu")))
        blocks = transformer_blocks(model)
        seen: list[tuple[int, list[bool]]] = []

        def probe(i: int):
            def hook(module: torch.nn.Module, args: object) -> None:  # runs after FSDP's own pre-forward hook
                seen.append((i, [not isinstance(b.attn1.to_q.weight, DTensor) for b in blocks]))
            return hook

        inner = model.action_blocks if mot else model.blocks  # the block entered last in a layer
        for i, block in enumerate(inner):
            block.register_forward_pre_hook(probe(i))
        batch = model.example_batch(2, generator=torch.Generator().manual_seed(0))
        wrapped(batch, torch.Generator().manual_seed(1))["loss"].backward()

        L = cfg.model.num_layers
        assert [i for i, _ in seen] == list(range(L))
        for i, gathered in seen:
            expected = [j == i for j in range(L)] + ([j == i for j in range(L)] if mot else [])
            assert gathered == expected, f"layer {i}: gathered blocks {gathered}"
        assert all(isinstance(b.attn1.to_q.weight, DTensor) for b in blocks)  # resharded after backward too
        for name, p in model.named_parameters():
            if name.startswith(("blocks.", "action_blocks.")):
                assert p.grad is not None, f"{name}: no gradient"
    finally:
        shutdown_distributed()

"""Weight initialization for a new run: from a pretrained checkpoint (two-stage recipe) or Wan 2.2.

Stage 1 (pretraining on a mixture, world-model objective on part of the samples)::

  gwp train --preset cpu-small --data A,B,C --set flow.world_model_prob=0.5 --steps N --out runs/pre

Stage 2 (fine-tuning on the target robot, action-centered objective only)::

  gwp train --preset cpu-small --data T --set flow.world_model_prob=0 --init runs/pre --steps M --out runs/ft

``--init`` loads the EMA weights (raw weights when a checkpoint has none) strictly: every tensor must
exist in the model with the same shape. The tolerated differences: *new embodiments*, rows of the
per-embodiment state/action MLPs (``state_encoder.mlps.N``, ``action_encoder.mlps.N``,
``action_decoder.mlps.N``) that the checkpoint lacks, keep their fresh initialization; so does a new
auxiliary scene-state head (``aux_head.``, model.aux_dim); the report lists them. A checkpoint's auxiliary
head is dropped when the model has none (it is a training signal, not part of the policy).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from gigaworld_policy.checkpoint import CheckpointError, load_checkpoint

EMBODIMENT_KEY = re.compile(r"^(state_encoder|action_encoder|action_decoder)\.mlps\.(\d+)\.")
AUX_PREFIX = "aux_head."  # model.aux_dim's head: may be new, or dropped


def match_weights(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], where: str
                  ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors to load, model keys left newly initialized); raises CheckpointError naming the tensor."""
    weights = {k: v for k, v in weights.items() if k in own or not k.startswith(AUX_PREFIX)}
    unexpected = sorted(set(weights) - set(own))
    if unexpected:
        raise CheckpointError(f"{where}: tensors not in this model: {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''} (different architecture?)")
    missing = sorted(set(own) - set(weights))
    not_new = [k for k in missing if not EMBODIMENT_KEY.match(k) and not k.startswith(AUX_PREFIX)]
    if not_new:
        raise CheckpointError(f"{where}: missing tensors {not_new[:5]}"
                              f"{'...' if len(not_new) > 5 else ''}; only new embodiments' MLP rows and a new "
                              f"auxiliary head (aux_head.) may be missing")
    for k, v in weights.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{where}: tensor {k!r} has shape {list(v.shape)}, the model expects "
                                  f"{list(own[k].shape)}")
    return weights, missing


def init_from_checkpoint(trainer: Any, path: str | Path) -> dict[str, Any]:
    """Load a pretrained checkpoint's weights into ``trainer``'s model; returns the report."""
    cfg, weights, _, ckpt = load_checkpoint(path, ema=True)
    where = str(ckpt / ("ema.safetensors" if (ckpt / "ema.safetensors").exists() else "model.safetensors"))
    if trainer.fsdp:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        own = trainer.model.state_dict()  # DTensors report their global shapes
        load, new = match_weights(own, weights, where)
        set_model_state_dict(trainer.model, load, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        own = trainer.model.state_dict()
        load, new = match_weights(own, weights, where)
        result = trainer.model.load_state_dict(load, strict=False)
        assert not result.unexpected_keys and sorted(result.missing_keys) == new
    new_embodiments = sorted({int(m.group(2)) for m in map(EMBODIMENT_KEY.match, new) if m})
    report = {"source": str(ckpt), "file": where, "loaded_tensors": len(load), "new_tensors": new,
              "new_embodiment_ids": new_embodiments, "source_preset": cfg.name}
    if trainer.info.is_main:
        print(f"init: loaded {len(load)} tensors from {where}; newly initialized {len(new)} tensors"
              + (f" (embodiment ids {new_embodiments})" if new else ""))
    return report


def init_from_wan(trainer: Any, path: str | Path) -> dict[str, Any]:
    """Initialize the visual stream from a Wan 2.2 transformer checkpoint directory.

    Delegates to ``gigaworld_policy.model.wan.load_wan_transformer(model, path)`` (diffusers parameter
    names, strict backbone checks; its load report is returned).
    """
    try:
        from gigaworld_policy.model import wan
    except ModuleNotFoundError as e:
        if e.name != "gigaworld_policy.model.wan":
            raise
        raise NotImplementedError(f"--init-wan {path}: gigaworld_policy.model.wan is not available in this build "
                                  f"(Wan 2.2 checkpoint loading is not implemented yet)") from None
    loader = getattr(wan, "load_wan_transformer", None)
    if loader is None:
        raise NotImplementedError(f"--init-wan {path}: gigaworld_policy.model.wan has no load_wan_transformer")
    if trainer.fsdp:
        raise NotImplementedError("--init-wan with FSDP: load into a full model first, save it as a checkpoint, "
                                  "then use --init (sharded Wan loading is not implemented)")
    import dataclasses

    report = loader(trainer.model, Path(path))
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        report = dataclasses.asdict(report)
    return {"source": str(path), "wan": report if isinstance(report, dict) else str(report)}

"""Checkpoint directories: what a trained policy is on disk (shared by training, Policy, server, eval).

A checkpoint is a directory::

  config.json         the full Config (model, flow, data, train)
  model.safetensors   raw weights
  ema.safetensors     EMA weights (used for evaluation and export when present)
  norm_stats.json     {"sources": [{"robot_type", "embodiment_id", "stats"}, ...]}: normalization statistics
                      per robot (data/stats.py format), so the policy works in robot units
  train_state/        optional, trainer-only (optimizer, scheduler, RNG, sampler)
  manifest.json       written last: every file's size and sha256. A directory without it, or whose files
                      do not match it, is incomplete and refused.

A training run directory holds ``checkpoints/step_XXXXXXXX/`` and a ``latest`` file naming the newest
complete one; every ``--checkpoint`` argument accepts either a checkpoint or a run directory.

Writes are atomic: files go to ``<dir>.tmp-<pid>`` with fsync, then one ``os.replace`` publishes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gigaworld_policy.config import Config

MANIFEST = "manifest.json"
LATEST = "latest"
CHECKPOINTS = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or does not fit the model; names the file."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def contiguous_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_checkpoint(path: str | Path, *, config: Config, model_state: dict[str, torch.Tensor],
                    norm_stats: dict[str, Any], ema_state: dict[str, torch.Tensor] | None = None,
                    extra_writer: Callable[[Path], None] | None = None) -> Path:
    """Write a complete checkpoint directory atomically; ``extra_writer(tmp_dir)`` adds trainer files."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_json(tmp / "config.json", config.to_dict())
    save_file(contiguous_state(model_state), str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file(contiguous_state(ema_state), str(tmp / "ema.safetensors"))
    write_json(tmp / "norm_stats.json", norm_stats)
    if extra_writer is not None:
        extra_writer(tmp)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    for p in files:  # make file contents durable before the manifest vouches for them
        with open(p, "rb+") as f:
            os.fsync(f.fileno())
    manifest = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    write_json(tmp / MANIFEST, {"files": manifest})
    _fsync_dir(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file against the manifest; return the manifest. Raises CheckpointError."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    if not mpath.is_file():
        raise CheckpointError(f"{mpath}: missing; the checkpoint is incomplete (interrupted write?)")
    try:
        manifest = json.loads(mpath.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{mpath}: unreadable manifest ({e})") from e
    for rel, meta in manifest.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in the manifest but missing")
        if f.stat().st_size != meta["size"]:
            raise CheckpointError(f"{f}: size {f.stat().st_size} bytes, manifest says {meta['size']} (truncated?)")
        if _sha256(f) != meta["sha256"]:
            raise CheckpointError(f"{f}: checksum does not match the manifest (corrupted)")
    return manifest


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory meaning its latest complete checkpoint."""
    path = Path(path)
    if (path / MANIFEST).exists() or (path / "config.json").exists():
        return path
    latest = path / LATEST
    if latest.is_file():
        target = path / CHECKPOINTS / latest.read_text().strip()
        if not target.is_dir():
            raise CheckpointError(f"{latest}: names {target}, which does not exist")
        return target
    ckpts = sorted((path / CHECKPOINTS).glob("step_*")) if (path / CHECKPOINTS).is_dir() else []
    complete = [c for c in ckpts if (c / MANIFEST).is_file()]
    if complete:
        return complete[-1]
    raise CheckpointError(f"{path}: neither a checkpoint directory (no {MANIFEST}) nor a run directory "
                          f"with checkpoints/step_*/")


def load_config(path: str | Path) -> Config:
    path = resolve_checkpoint(path)
    f = path / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{f}: missing")
    return Config.from_dict(json.loads(f.read_text()))


def load_checkpoint(path: str | Path, *, ema: bool = True, verify: bool = True
                    ) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any], Path]:
    """(config, weights, norm_stats, checkpoint dir); EMA weights when present and ``ema``."""
    path = resolve_checkpoint(path)
    if verify:
        verify_checkpoint(path)
    config = load_config(path)
    wfile = path / "ema.safetensors" if ema and (path / "ema.safetensors").exists() else path / "model.safetensors"
    try:
        weights = load_file(str(wfile))
    except Exception as e:  # safetensors raises several types for bad headers / short files
        raise CheckpointError(f"{wfile}: cannot be read as safetensors ({e})") from e
    stats_file = path / "norm_stats.json"
    norm_stats = json.loads(stats_file.read_text()) if stats_file.exists() else {"sources": []}
    return config, weights, norm_stats, path


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], *, where: str = "checkpoint"
                       ) -> None:
    """Strict, shape-checked load whose errors name the tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{where}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected tensors {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for k, v in weights.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{where}: tensor {k!r} has shape {list(v.shape)}, the model expects "
                                  f"{list(own[k].shape)}")
    model.load_state_dict(weights, strict=True)


def update_latest(run_dir: str | Path, checkpoint: str | Path) -> None:
    run_dir = Path(run_dir)
    tmp = run_dir / f"{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(Path(checkpoint).name + "\n")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / LATEST)

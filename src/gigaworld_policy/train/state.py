"""The trainer's resumable state as safetensors + JSON (never pickle).

``train_state/`` inside a checkpoint directory:

  state.json                 step, counters, sampler position, scheduler, optimizer metadata, RNG scalars
  optimizer.safetensors      optimizer tensors, flattened: ``state.<param index>.<key>``
  rng.safetensors            torch CPU (and CUDA) generator states, numpy MT19937 key
  dcp/                       FSDP only: sharded model + optimizer state (torch.distributed.checkpoint);
                             then optimizer.safetensors is absent

The optimizer's ``param_groups`` (hyper-parameters and parameter indices) and any non-tensor per-parameter
values go to JSON; every tensor goes to safetensors.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gigaworld_policy.checkpoint import CheckpointError, write_json

TRAIN_STATE = "train_state"
STATE_JSON = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
DCP_DIR = "dcp"


# -- optimizer ---------------------------------------------------------------------------------------
def flatten_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors, JSON metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# -- RNG ------------------------------------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    name, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the legacy global RNG itself
    tensors["numpy_key"] = torch.from_numpy(np.asarray(key, dtype=np.uint32).view(np.int32).copy())
    py_version, py_state, py_gauss = random.getstate()
    meta = {"numpy": {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss}}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    n = meta["numpy"]
    key = tensors["numpy_key"].numpy().view(np.uint32)
    np.random.set_state((n["name"], key, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# -- the train_state directory ----------------------------------------------------------------------
def write_train_state(directory: Path, *, state: dict[str, Any], optimizer_sd: dict[str, Any] | None) -> None:
    """Write ``state.json``, ``rng.safetensors`` and (unless sharded) ``optimizer.safetensors``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng_tensors, rng_meta = capture_rng()
    save_file(rng_tensors, str(directory / RNG_FILE))
    doc = dict(state, rng=rng_meta)
    if optimizer_sd is not None:
        tensors, meta = flatten_optimizer_state(optimizer_sd)
        save_file(tensors, str(directory / OPTIMIZER_FILE))
        doc["optimizer"] = meta
    write_json(directory / STATE_JSON, doc)


def read_train_state(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(state.json contents, optimizer state dict or None when sharded, RNG tensors)."""
    directory = checkpoint / TRAIN_STATE
    sfile = directory / STATE_JSON
    if not sfile.is_file():
        raise CheckpointError(f"{sfile}: missing; {checkpoint} has no trainer state and cannot be resumed "
                              f"(use --init to start a new run from its weights)")
    try:
        doc = json.loads(sfile.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{sfile}: unreadable ({e})") from e
    opt_sd = None
    if "optimizer" in doc:
        ofile = directory / OPTIMIZER_FILE
        opt_sd = unflatten_optimizer_state(_load(ofile), doc["optimizer"])
    return doc, opt_sd, _load(directory / RNG_FILE)


def _load(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for bad headers / short files
        raise CheckpointError(f"{path}: cannot be read as safetensors ({e})") from e

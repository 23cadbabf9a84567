"""Where a number came from: the git commit of the code that produced it (reports and benchmarks), and
how a trained checkpoint was made (``RUN_DIR/provenance.json``, read back by ``describe_checkpoint``).

``RUN_DIR/provenance.json`` (written by the trainer at every launch, so a resumed run lists each part)::

  {"data": [{"root", "robot_type", "weight", "episodes", "frames",
             "provenance": <the dataset's meta/provenance.json: collector, seeds, noise, codec; or null>}],
   "launches": [{"git_commit", "from_step", "to_step", "world_size", "init", "init_wan"}, ...]}

A launch whose data differ from the first launch's carries its own ``data``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

RUN_PROVENANCE = "provenance.json"


def git_commit() -> str | None:
    """Short commit hash of the checkout this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _read(path: Path) -> dict[str, Any]:
    from gigaworld_policy.checkpoint import CheckpointError  # here, not above: it imports torch (4 s)

    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); move it aside to start a new record") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("launches"), list):
        raise CheckpointError(f"{path}: no 'launches' list; not a run provenance record")
    return doc


def record_launch(run_dir: str | Path, *, data: list[dict[str, Any]], from_step: int, to_step: int,
                  **facts: Any) -> Path:
    """Append this launch of the trainer (commit, step range, ``facts``) to ``RUN_DIR/provenance.json``,
    atomically; the first launch also records ``data`` (``WindowedDataset.describe()``, [] for synthetic)."""
    path = Path(run_dir) / RUN_PROVENANCE
    doc = _read(path) if path.is_file() else {"data": data, "launches": []}
    launch: dict[str, Any] = {"git_commit": git_commit(), "from_step": from_step, "to_step": to_step, **facts}
    if data != doc["data"]:
        launch["data"] = data
    doc["launches"].append(launch)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """How a checkpoint (or a run directory's latest one) was made: its directory, its full config and its
    run's ``provenance.json`` (None for runs trained before the trainer wrote one)."""
    from gigaworld_policy.checkpoint import CHECKPOINTS, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    config = json.loads((ckpt / "config.json").read_text())
    run_dir = ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else None
    run_file = None if run_dir is None else run_dir / RUN_PROVENANCE
    run = _read(run_file) if run_file is not None and run_file.is_file() else None
    return {"checkpoint": str(ckpt.resolve()), "config": config, "run": run}

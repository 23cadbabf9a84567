"""Multi-process runs under torchrun (gloo on CPU): DDP and FSDP2 match one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    return ["train", "--preset", "tiny", "--data", str(data), "--steps", "4", "--out", str(out), "--no-progress",
            *sets, *extra]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "gigaworld_policy.cli", *args]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(mw_dataset: Path, tmp_path: Path, strategy: str) -> None:
    # FSDP materializes weights shard by shard (a different draw than the plain model): start both runs
    # from the same checkpoint so that only the parallelism differs.
    pre = tmp_path / "pre"
    _run([sys.executable, "-m", "gigaworld_policy.cli", *_train_args(mw_dataset, pre, "--steps", "1")])
    one = tmp_path / "one"
    _run([sys.executable, "-m", "gigaworld_policy.cli",
          *_train_args(mw_dataset, one, "--grad-accum", "2", "--init", str(pre))])
    two = tmp_path / "two"
    _run(_torchrun(*_train_args(mw_dataset, two, "--set", f"train.strategy={strategy}", "--init", str(pre))))
    a, b = _losses(one), _losses(two)
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert (two / "checkpoints" / "step_00000004" / "manifest.json").is_file()
    if strategy == "fsdp":  # sharded train state, and an exact resume through it
        assert (two / "checkpoints" / "step_00000004" / "train_state" / "dcp").is_dir()
        r = tmp_path / "resumed"
        args = _train_args(mw_dataset, r, "--set", "train.strategy=fsdp", "--init", str(pre))
        _run(_torchrun(*args, "--max-minutes", "0"))
        assert len(_losses(r)) == 1
        _run(_torchrun(*[x for x in args if x not in ("--init", str(pre))], "--resume"))
        assert _losses(r) == b

"""SIGKILL a training process mid-run (ideally mid-checkpoint-write), resume, and get bit-identical losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import TINY_OVERRIDES, gwp_command


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


def test_sigkill_and_resume_is_bit_identical(mw_dataset: Path, tmp_path: Path) -> None:
    sets = [a for o in [*TINY_OVERRIDES, "train.save_every=3", "train.schedule=cosine"] for a in ("--set", o)]
    args = ["train", "--preset", "tiny", "--data", str(mw_dataset), "--steps", "14", "--no-progress", *sets]
    ref = tmp_path / "ref"
    subprocess.run(gwp_command(*args, "--out", str(ref)), check=True, capture_output=True, timeout=300)

    run = tmp_path / "run"
    proc = subprocess.Popen(gwp_command(*args, "--out", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = run / "checkpoints"
    deadline = time.monotonic() + 240
    killed_mid_write = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            have = list(ckpts.glob("step_*")) if ckpts.is_dir() else []
            complete = [p for p in have if ".tmp-" not in p.name and (p / "manifest.json").is_file()]
            if complete and any(".tmp-" in p.name for p in have):
                killed_mid_write = True  # a second checkpoint is being written right now
                break
            if any(p.name == "step_00000009" for p in complete):
                break  # fall back: kill between checkpoints
            time.sleep(0.002)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run / "latest").is_file(), "the run was killed before its first checkpoint"
    res = subprocess.run(gwp_command(*args, "--out", str(run), "--resume"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert proc.returncode == -signal.SIGKILL
    assert _losses(run) == _losses(ref)
    assert not [p for p in ckpts.iterdir() if ".tmp-" in p.name]
    print(f"killed mid-write: {killed_mid_write}")

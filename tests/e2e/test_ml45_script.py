"""scripts/ml45_pretraining.sh: its flags reach the gwp commands, finished stages are skipped, a stopped
fine-tuning resumes instead of re-initializing. `gwp` is replaced by a stand-in on PATH that logs its
arguments and writes the outputs the script checks for (the real stages take hours)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ml45_pretraining.sh"

FAKE_GWP = """#!/usr/bin/env bash
echo "$* OMP=$OMP_NUM_THREADS" >> "$GWP_LOG"
sub=$1; shift
while [ $# -gt 0 ]; do case $1 in --out) out=$2; shift;; --steps) steps=$2; shift;; esac; shift; done
case $sub in
  collect) mkdir -p "$out" ;;
  train) mkdir -p "$out/checkpoints/step_$(printf %08d "$steps")"; echo step > "$out/latest" ;;
  eval) mkdir -p "$out"; echo '""" + json.dumps(
    {"checkpoint": "c", "per_task": {"door-lock-v3": {"seeds": [0], "episode_success": [True]}}}) + """' > "$out/report.json" ;;
esac
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        gwp = bin_dir / "gwp"
        gwp.write_text(FAKE_GWP)
        gwp.chmod(gwp.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GWP_LOG": str(tmp_path / "gwp.log")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env)


def _log(tmp_path: Path) -> list[str]:
    path = tmp_path / "gwp.log"
    return path.read_text().splitlines() if path.exists() else []


def test_flags_reach_the_commands_and_stages_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "ml45"
    flags = ["--pre-demos", "3", "--ft-demos", "2", "--pre-steps", "7", "--ft-steps", "5", "--episodes", "4",
             "--threads", "2"]
    first = _run(tmp_path, str(out), *flags)
    assert first.returncode == 0, first.stderr
    log = _log(tmp_path)
    assert log[0] == f"collect --env metaworld --tasks ML45-train --episodes 3 --cameras corner2 --image-size 64 --out {out}/train3 OMP=2"
    assert log[1].startswith("collect --env metaworld --tasks ML45-test --episodes 2 ")
    pre, ft, scratch = log[2:5]
    assert f"--out {out}/pre --steps 7" in pre and "--set flow.world_model_prob=0.5" in pre
    assert f"--out {out}/ft --steps 5" in ft and f"--init {out}/pre" in ft and "--resume" not in ft
    assert f"--out {out}/scratch --steps 5" in scratch and "--init" not in scratch
    assert all("--episodes 4" in line for line in log[5:7]) and len(log) == 7
    assert "1/  1 = 1.00" in first.stdout  # pool_eval.py over each evaluation

    again = _run(tmp_path, str(out), *flags)
    assert again.returncode == 0 and len(_log(tmp_path)) == 7  # every stage's output exists

    (out / "ft" / "checkpoints" / "step_00000005").rmdir()  # a fine-tuning stopped before its last step
    third = _run(tmp_path, str(out), *flags)
    assert third.returncode == 0
    (line,) = _log(tmp_path)[7:]
    assert f"--out {out}/ft" in line and "--resume" in line and "--init" not in line


def test_bad_arguments_are_named_and_nothing_runs(tmp_path: Path) -> None:
    for args, message in ((["--pre-steps", "x", str(tmp_path / "o")], "--pre-steps: expected a positive integer"),
                          ([str(tmp_path / "o"), "--bogus"], "unknown option --bogus"),
                          ([str(tmp_path / "o"), str(tmp_path / "p")], "one OUT folder"),
                          ([], "usage: bash scripts/ml45_pretraining.sh OUT")):
        res = _run(tmp_path, *args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
    assert not (tmp_path / "o").exists() and not _log(tmp_path)

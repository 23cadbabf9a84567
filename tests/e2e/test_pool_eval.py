"""scripts/pool_eval.py: pooling `gwp eval` reports and the paired comparison of two runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pool_eval.py"


def _report(path: Path, checkpoint: str, per_task: dict[str, list[bool]], first_seed: int) -> str:
    path.mkdir(parents=True)
    tasks = {t: {"seeds": list(range(first_seed, first_seed + len(ok))), "episode_success": ok}
             for t, ok in per_task.items()}
    (path / "report.json").write_text(json.dumps({"checkpoint": checkpoint, "per_task": tasks}))
    return str(path / "report.json")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_pool_and_paired(tmp_path: Path) -> None:
    a = [_report(tmp_path / "a1", "A", {"reach-v3": [True] * 8 + [False] * 2}, 0),
         _report(tmp_path / "a2", "A", {"reach-v3": [True] * 10}, 10)]
    b = [_report(tmp_path / "b1", "B", {"reach-v3": [False] * 9 + [True]}, 0),
         _report(tmp_path / "b2", "B", {"reach-v3": [True] * 5 + [False] * 5}, 10)]
    pooled = _run(*a)
    assert pooled.returncode == 0 and "18/ 20 = 0.90" in pooled.stdout
    out = _run(*a, "--paired", *b)
    assert out.returncode == 0, out.stderr
    # seeds 0-7: A only; 8: neither; 9: B only; 10-14: both; 15-19: A only
    assert "A 18, B 6; both 5, only A 13, only B 1; exact McNemar p = 0.0018" in out.stdout
    mixed = _run(a[0], b[1])
    assert mixed.returncode != 0 and "different checkpoints" in mixed.stderr
    twice = _run(a[0], a[0])
    assert twice.returncode != 0 and "seed 0 is in an earlier report too" in twice.stderr


def test_saved_record_reads_back_like_the_reports(tmp_path: Path) -> None:
    a = [_report(tmp_path / "a1", "A", {"reach-v3": [True] * 8 + [False] * 2, "push-v3": [False] * 10}, 0),
         _report(tmp_path / "a2", "A", {"reach-v3": [True] * 10, "push-v3": [True] + [False] * 9}, 10)]
    b = [_report(tmp_path / "b1", "B", {"reach-v3": [False] * 9 + [True]}, 0)]
    record = tmp_path / "study" / "a.json"
    saved = _run(*a, "--save", str(record))
    assert saved.returncode == 0, saved.stderr
    data = json.loads(record.read_text())
    assert data["per_task"]["reach-v3"]["successes"] == 18 and data["per_task"]["push-v3"]["episodes"] == 20
    assert [p["report"] for p in data["pooled_from"]] == a
    # the record pools and pairs exactly like the reports it was made from
    assert "19/ 40 = 0.475" in _run(str(record)).stdout
    assert _run(str(record), "--paired", *b).stdout == _run(*a, "--paired", *b).stdout
    # a record cannot be mixed with reports of another checkpoint, nor counted twice
    later_b = _report(tmp_path / "b2", "B", {"reach-v3": [True] * 10}, 20)
    assert "different checkpoints" in _run(str(record), later_b).stderr
    assert "in an earlier report too" in _run(str(record), a[0]).stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert "bad.json: no 'per_task' field" in _run(str(bad)).stderr
    assert _run(*a, "--save", str(record), "--paired", *b).returncode != 0


def test_saved_record_says_how_the_checkpoint_was_made(tmp_path: Path) -> None:
    run = tmp_path / "run"  # the run-directory layout the trainer writes, with only what the record reads
    (run / "checkpoints" / "step_00000004").mkdir(parents=True)
    (run / "checkpoints" / "step_00000004" / "config.json").write_text(json.dumps({"name": "tiny"}))
    (run / "latest").write_text("step_00000004\n")
    made = {"data": [{"root": "/data/mt10", "provenance": {"action_noise": 0.3}}],
            "launches": [{"git_commit": "abc1234", "from_step": 0, "to_step": 4}]}
    (run / "provenance.json").write_text(json.dumps(made))
    reports = [_report(tmp_path / "e1", str(run), {"reach-v3": [True, False]}, 0)]
    record = tmp_path / "r.json"
    assert _run(*reports, "--save", str(record)).returncode == 0
    training = json.loads(record.read_text())["training"]
    assert training["run"] == made and training["config"] == {"name": "tiny"}
    assert training["checkpoint"] == str((run / "checkpoints" / "step_00000004").resolve())
    # a checkpoint that is not on this machine: the outcomes are still saved, and the gap is said
    gone = [_report(tmp_path / "e2", str(tmp_path / "gone"), {"reach-v3": [True]}, 0)]
    saved = _run(*gone, "--save", str(record))
    assert saved.returncode == 0 and "says nothing of how the checkpoint was made" in saved.stderr
    data = json.loads(record.read_text())
    assert data["training"] is None and data["per_task"]["reach-v3"]["successes"] == 1

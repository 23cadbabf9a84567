"""scripts/study_row.py: one study row in one command (collect -> train -> parallel evaluation calls -> pool)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_row.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.mark.slow
def test_study_row_runs_every_stage_and_resumes_by_skipping(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    args = ["--env", "metaworld", "--tasks", "reach-v3", "--data", str(data), "--out", str(run),
            "--demos", "2", "--cameras", "corner", "--image-size", "32", "--action-noise", "0.1",
            "--reach-aim", "fingertips", "--steps-after-success", "3", "reach-v3=5",
            "--preset", "tiny", "--steps", "4",
            "--set", "train.batch_size=4", "--set", "train.save_every=2", "--set", "train.warmup_steps=1",
            "--episodes", "2", "--episodes-per-call", "1", "--jobs", "2", "--eval-max-steps", "20"]
    first = _run(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (data / "meta" / "info.json").is_file()
    assert (run / "checkpoints" / "step_00000004").is_dir()
    reports = [run.parent / "run_eval" / name / "report.json" for name in ("s0a", "s1a")]
    assert all(r.is_file() for r in reports)
    # the two calls pooled: 2 episodes of reach-v3 (seeds 0 and 1), and the pooled mean line
    assert re.search(r"reach-v3\s+\d/\s*2 = ", first.stdout), first.stdout
    assert re.search(r"mean\s+\d/\s*2 = ", first.stdout), first.stdout
    for stage in (" collect ", " train ", " eval "):
        assert stage in first.stdout, stage

    stamps = [r.stat().st_mtime_ns for r in reports]
    again = _run(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in (" collect ", " train ", " eval "):  # every stage's output exists: nothing runs again
        assert stage not in again.stdout, stage
    assert [r.stat().st_mtime_ns for r in reports] == stamps
    assert re.search(r"mean\s+\d/\s*2 = ", again.stdout)

    reports[1].unlink()  # a lost evaluation call is run again, alone
    record = tmp_path / "docs" / "row.json"
    third = _run(*args, "--record", str(record))
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count(" eval ") == 1 and "s1a" in third.stdout and " train " not in third.stdout
    assert reports[1].is_file() and reports[0].stat().st_mtime_ns == stamps[0]
    saved = json.loads(record.read_text())
    outcomes = saved["per_task"]["reach-v3"]
    assert outcomes["seeds"] == [1_000_000, 1_000_001] and len(outcomes["episode_success"]) == 2
    # the record says how the row was made, down to the collection's noise, after the run folders are gone
    made = saved["training"]
    assert made["config"]["name"] == "tiny" and made["config"]["train"]["batch_size"] == 4  # with its --set
    assert [(x["from_step"], x["to_step"]) for x in made["run"]["launches"]] == [(0, 4)]
    [src] = made["run"]["data"]
    assert src["root"] == str(data.resolve()) and src["provenance"]["action_noise"] == 0.1
    assert src["provenance"]["reach_aim"] == "fingertips" and src["provenance"]["steps_after_success"] == 3
    assert src["provenance"]["steps_after_success_per_task"] == {"reach-v3": 5}

    # the trained row evaluated another way (temporal ensembling) into its own folder: only evaluation runs
    ens, ens_record = tmp_path / "run_ens", tmp_path / "docs" / "row_ens.json"
    fourth = _run(*args, "--ensemble-coef", "0.01", "--noise-scale", "0.5", "--num-steps", "3", "--eval-out", str(ens),
                  "--record", str(ens_record))
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert fourth.stdout.count(" eval ") == 2 and " train " not in fourth.stdout
    assert fourth.stdout.count("--ensemble-coef 0.01 --noise-scale 0.5 --num-steps 3") == 2
    for name in ("s0a", "s1a"):
        report = json.loads((ens / name / "report.json").read_text())
        assert report["ensemble_coef"] == 0.01 and report["noise_scale"] == 0.5 and report["num_steps"] == 3
    parts = json.loads(ens_record.read_text())["pooled_from"]
    assert [(x["ensemble_coef"], x["noise_scale"], x["num_steps"]) for x in parts] == [(0.01, 0.5, 3)] * 2


def test_study_row_rejects_a_split_that_does_not_divide(tmp_path: Path) -> None:
    out = _run("--env", "metaworld", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"),
               "--episodes", "25", "--episodes-per-call", "10")
    assert out.returncode == 2
    assert "--episodes 25 is not a multiple of --episodes-per-call 10" in out.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()


def test_study_row_names_an_unknown_task(tmp_path: Path) -> None:
    out = _run("--env", "metaworld", "--tasks", "reach-v9", "--data", str(tmp_path / "d"),
               "--out", str(tmp_path / "r"))
    assert out.returncode != 0 and "reach-v9" in out.stderr
    assert not (tmp_path / "d").exists()


def test_study_row_mixture_names_a_missing_root_before_running_anything(tmp_path: Path) -> None:
    """A mixture is never collected: a missing root, or a weight count that does not match, stops the row
    with the root or the weights named, before any stage runs."""
    present = tmp_path / "present"
    (present / "meta").mkdir(parents=True)
    (present / "meta" / "info.json").write_text("{}")
    missing = tmp_path / "missing"
    base = ["--env", "metaworld", "--tasks", "reach-v3", "--out", str(tmp_path / "run")]
    out = _run(*base, "--data", f"{present},{missing}")
    assert out.returncode != 0 and str(missing) in out.stderr and " collect " not in out.stdout
    assert not missing.exists() and not (tmp_path / "run").exists()
    out = _run(*base, "--data", f"{present},{present}", "--weights", "1,2,3")
    assert out.returncode != 0 and "--weights '1,2,3'" in out.stderr and "2 roots" in out.stderr
    assert not (tmp_path / "run").exists()

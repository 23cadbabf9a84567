"""`gwp`: bad input ends in one line naming what is wrong, not a traceback; a bug still raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from gigaworld_policy import config_cli
from gigaworld_policy.cli import main


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "tiny", "--data", "{tmp}/empty", "--steps", "2", "--out", "{tmp}/run", "--no-progress"],
     "gwp train: error: {tmp}/empty/meta/info.json: file is missing"),
    (["train", "--preset", "tiny", "--data", "{tmp}/empty", "--steps", "2", "--out", "{tmp}/run",
      "--set", "model.bogus=1"], "gwp train: error: model.bogus: unknown field"),
    (["eval", "--checkpoint", "{tmp}/nothing", "--env", "metaworld", "--tasks", "reach-v3"],
     "gwp eval: error: {tmp}/nothing: neither a checkpoint directory"),
])
def test_input_errors_print_one_line(argv: list[str], message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err


def test_a_bug_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(config_cli, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["presets"])

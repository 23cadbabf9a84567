"""`gwp bench train`: the real trainer step on synthetic batches, with pixels or with cached latents."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from gigaworld_policy.cli import main as gwp
from gigaworld_policy.config import get_preset
from gigaworld_policy.model import WorldActionModel
from gigaworld_policy.model.batch import example_batch, validate


@pytest.mark.parametrize("mode", ["action_centered", "no_video"])
def test_latent_example_batches_follow_the_layout_and_give_the_encoded_loss(mode: str) -> None:
    cfg = dataclasses.replace(get_preset("tiny").model, attention_mode=mode)
    pixels = example_batch(cfg, 2, generator=torch.Generator().manual_seed(0))
    cached = example_batch(cfg, 2, generator=torch.Generator().manual_seed(0), latents=True)
    assert "image" not in cached and "future_frames" not in cached
    assert cached["latents"].shape == (2, cfg.latent_channels, 1 + cfg.future_latent_frames, *cfg.latent_hw)
    assert validate(cached, cfg, training=True) == 2
    # the loss on cached latents is the loss on the pixels they encode
    torch.manual_seed(0)
    model = WorldActionModel(cfg).eval()
    frames = (torch.cat([pixels["image"][:, None], pixels["future_frames"]], 1) if "future_frames" in pixels
              else pixels["image"][:, None])
    swapped = {k: v for k, v in pixels.items() if k not in ("image", "future_frames")}
    swapped["latents"] = model.encode_video(frames)
    with torch.no_grad():
        a = model.compute_loss(pixels, generator=torch.Generator().manual_seed(1))["loss"]
        b = model.compute_loss(swapped, generator=torch.Generator().manual_seed(1))["loss"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="latents=True is a training batch"):
        example_batch(cfg, 2, training=False, latents=True)


@pytest.mark.parametrize("latents", [False, True])
def test_cli_times_steps_and_never_encodes_with_latents(latents: bool, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls: list[int] = []
    real = WorldActionModel.encode_video

    def counting(self: WorldActionModel, frames: torch.Tensor) -> torch.Tensor:
        calls.append(int(frames.shape[1]))
        return real(self, frames)

    monkeypatch.setattr(WorldActionModel, "encode_video", counting)
    out = tmp_path / "bench.json"
    args = ["bench", "train", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--json", str(out)]
    assert gwp(args + (["--latents"] if latents else [])) == 0
    r = json.loads(out.read_text())
    assert r == json.loads(capsys.readouterr().out)
    assert r["step_s_median"] > 0 and r["samples_per_s"] == pytest.approx(r["batch_size"] / r["step_s_median"])
    assert r["inputs"] == ("cached latents" if latents else "pixels (tokenizer in the step)")
    assert (calls == []) if latents else (len(calls) == 3)  # one encode per step, warm-up included

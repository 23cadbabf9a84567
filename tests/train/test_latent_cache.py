"""The offline latent cache in training (tiny preset, pixel tokenizer): cached samples equal the encoded pixel
samples and give the same loss without decoding a frame; stale, incomplete or augmented uses are refused
naming the file, episode and frame; gwp cache-latents + gwp train --latent-cache run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_config, write_metaworld_dataset
from gigaworld_policy.cli import main
from gigaworld_policy.data.latent_cache import LatentCacheError, write_latent_cache
from gigaworld_policy.data.windowed import DataSource, WindowedDataset, collate
from gigaworld_policy.model import WorldActionModel
from gigaworld_policy.model.batch import validate
from gigaworld_policy.model.tokenizers import PixelTokenizer
from gigaworld_policy.train.trainer import train

NO_AUG = "data.augment=false"


def write_cache(root: Path, out: Path, *overrides: str, indices: list[int] | None = None) -> Path:
    ds = WindowedDataset([root], tiny_config(NO_AUG, *overrides), train=False)
    return write_latent_cache(ds, PixelTokenizer(), out, batch_size=5, dtype=torch.float32, indices=indices)


def no_decoding(*_args: object) -> None:
    raise AssertionError("a sample with a latent cache decoded frames")


@pytest.mark.parametrize("mode", ["action_centered", "no_video"])
def test_cached_samples_equal_encoded_pixels_and_give_the_pixel_loss(mw_dataset: Path, tmp_path: Path, mode: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(NO_AUG, f"model.attention_mode={mode}")
    cache = write_cache(mw_dataset, tmp_path / "cache", f"model.attention_mode={mode}")
    idx = [0, 5, 11, 12, 30, 47]  # mw_dataset: 4 episodes x 12 frames; 11 and 47 end an episode
    pixels = [WindowedDataset([mw_dataset], cfg, train=True)[i] for i in idx]
    monkeypatch.setattr(WindowedDataset, "_images", no_decoding)
    ds = WindowedDataset([DataSource(mw_dataset, latent_cache=cache)], cfg, train=True)
    samples = [ds[i] for i in idx]
    for want, got in zip(pixels, samples):
        assert "image" not in got and "future_frames" not in got
        frames = torch.cat([want["image"][None], want.get("future_frames", want["image"][None][:0])])
        assert torch.equal(got["latents"], frames.transpose(0, 1))  # pixel tokenizer: [3, 1 + f, h, w]
        assert want.keys() - {"image", "future_frames"} == got.keys() - {"latents"}
        assert all(torch.equal(want[k], got[k]) for k in got.keys() - {"latents"})
    if mode != "no_video":
        assert any(bool(s["future_is_pad"].any()) for s in samples) and samples[0]["latents"].shape[1] == 3
    else:
        assert samples[0]["latents"].shape[1] == 1  # the reference frame only, as the loss uses
    want_batch, got_batch = collate(pixels), collate(samples)
    validate(got_batch, cfg.model, training=True)
    model = WorldActionModel(cfg).train()
    a = model.compute_loss(want_batch, torch.Generator().manual_seed(1))
    b = model.compute_loss(got_batch, torch.Generator().manual_seed(1))
    assert all(torch.allclose(a[k], b[k]) for k in a), (a, b)


def test_stale_incomplete_and_augmented_uses_are_refused(mw_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny_config(NO_AUG)
    cache = write_cache(mw_dataset, tmp_path / "cache")
    meta = cache / "latent_cache.json"

    def opened(c: object, *overrides: str, train_view: bool = True) -> WindowedDataset:
        return WindowedDataset([DataSource(mw_dataset, latent_cache=c)], tiny_config(NO_AUG, *overrides),
                               train=train_view)

    with pytest.raises(LatentCacheError, match=r"latents have shape \[3, 3, 32, 32\], expected \[3, 2, 32, 32\]"):
        opened(cache, "model.num_future_frames=1", "data.future_offsets=[4]")  # another latent geometry
    with pytest.raises(LatentCacheError, match=r"another window.*future_offsets: cache \[4, 8\], now \[2, 8\]"):
        opened(cache, "data.future_offsets=[2,8]")  # same shape, other frames
    with pytest.raises(ValueError, match=r"needs data\.augment=false"):
        opened(cache, "data.augment=true")
    opened(cache, "data.augment=true", train_view=False)  # deterministic view: fine
    with pytest.raises(LatentCacheError, match="missing; not a"):
        opened(tmp_path / "nothing")
    # an episode never written: refused up front, naming the episode
    partial = write_cache(mw_dataset, tmp_path / "partial", indices=list(range(36)))
    with pytest.raises(LatentCacheError, match=r"episodes \[3\] of .* are not cached"):
        opened(partial)
    # a frame never written, and an episode file lost after opening: refused when read, naming file and frame
    holey = write_cache(mw_dataset, tmp_path / "holey", indices=[i for i in range(48) if i != 17])
    ds = opened(holey)
    assert ds[16]["latents"].shape == (3, 3, 32, 32)
    with pytest.raises(LatentCacheError, match=r"episode_000001\.safetensors: episode 1 has no cached frame 5"):
        ds[17]
    (holey / "source_000" / "episode_000002.safetensors").unlink()
    with pytest.raises(LatentCacheError, match=r"episode_000002\.safetensors: missing: episode 2 \(frame 3"):
        ds[27]
    # a cache of a two-dataset mixture is not one dataset's cache
    write_latent_cache(WindowedDataset([mw_dataset, mw_dataset], cfg, train=False), PixelTokenizer(),
                       tmp_path / "mix", batch_size=8)
    with pytest.raises(LatentCacheError, match=r"holds sources \[0, 1\]"):
        opened(tmp_path / "mix")
    with pytest.raises(ValueError, match=r"given for sources .* but not for"):  # batches would mix the layouts
        WindowedDataset([DataSource(mw_dataset, latent_cache=cache), mw_dataset], cfg, train=True)
    with pytest.raises(LatentCacheError, match="random augmentation"):
        write_latent_cache(WindowedDataset([mw_dataset], tiny_config("data.augment=true"), train=True),
                           PixelTokenizer(), tmp_path / "aug")
    assert json.loads(meta.read_text())["windows"]["0"]["future_offsets"] == [4, 8]


def test_cache_latents_then_train_on_them_without_encoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """gwp cache-latents writes ROOT/gwp_latents; gwp train --latent-cache (bare: that default) trains 3 steps
    on it with held-out evaluation on pixels, and no training step encodes a frame window."""
    root = write_metaworld_dataset(tmp_path / "mw")
    sets = ["--set", "data.text_encoder=none", "--set", NO_AUG]
    assert main(["cache-latents", "--preset", "tiny", *sets, "--data", str(root), "--dtype", "float32"]) == 0
    assert (root / "gwp_latents" / "latent_cache.json").is_file()
    windows: list[int] = []
    real = WorldActionModel.encode_video

    def counting(self: WorldActionModel, frames: torch.Tensor) -> torch.Tensor:
        windows.append(int(frames.shape[1]))
        return real(self, frames)

    monkeypatch.setattr(WorldActionModel, "encode_video", counting)
    args = ["train", "--preset", "tiny", *sets, "--set", "train.batch_size=4", "--set", "train.eval_every=3",
            "--data", str(root), "--latent-cache", "--steps", "3", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final_step"] == 3 and summary["skipped_steps"] == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [0, 1, 2]
    assert any(r["kind"] == "eval" for r in records) and list((tmp_path / "run" / "eval").glob("*_frames.png"))
    assert windows and set(windows) == {1}  # only evaluation encodes (single observation frames)
    with pytest.raises(ValueError, match=r"needs data\.augment=false"):
        train(tiny_config("data.text_encoder=none"), [str(root)], 1, tmp_path / "aug", progress=False,
              latent_cache=[root / "gwp_latents"])
    meta_file = root / "gwp_latents" / "latent_cache.json"
    meta = json.loads(meta_file.read_text())
    meta["tokenizer"]["sha256"] = "0" * 64  # as if another VAE had written it
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(LatentCacheError, match=r"latent_cache\.json: written by another tokenizer"):
        train(tiny_config("data.text_encoder=none", NO_AUG), [str(root)], 1, tmp_path / "stale", progress=False,
              latent_cache=[root / "gwp_latents"])
    capsys.readouterr()

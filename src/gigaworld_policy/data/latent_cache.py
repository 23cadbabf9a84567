"""Offline latent cache (``gwp cache-latents``): encode each sample's frame window once, train on latents.

Without it, training at the 5B shape decodes and composes 1 + f pixel frames per sample in the data loader
and runs the frozen VAE encoder on them in every step, for latents that never change (augmentation off,
the crop is the deterministic one). The cache stores, per (episode, anchor frame), what
``WorldActionModel.encode_video`` returns for ``image`` + ``future_frames``; ``WindowedDataset`` then
yields those as ``latents`` instead of decoding pixels (``DataSource(latent_cache=DIR)``, ``gwp train
--latent-cache``), and ``compute_loss`` uses them instead of calling the tokenizer.

On disk, one directory per dataset (default ``<dataset>/gwp_latents``)::

  latent_cache.json                       latent shape [C, 1 + f, h, w], dtype, tokenizer geometry and
                                          weights fingerprint, cached episodes, and each source's window
                                          (WindowedDataset.window_spec)
  source_SSS/episode_EEEEEE.safetensors   frames int64 [m] (anchor frames), latents [m, C, 1 + f, h, w]

Legend: C latent channels, f future latent frames (0 for ``attention_mode=no_video``: the reference frame
only, as the loss uses), h/w latent height/width, m anchor frames of one episode.

The geometry is checked when a cache is opened (latent shape, window, episodes), the tokenizer that wrote
it when training starts (``LatentCache.check_tokenizer``: the SHA-256 of the VAE's weights, buffers and
dtype, ``VideoTokenizer.fingerprint``), a missing episode or frame when it is read; errors name the file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset

from gigaworld_policy.checkpoint import CheckpointError
from gigaworld_policy.data.workers import worker_context
from gigaworld_policy.model.tokenizers import VideoTokenizer

LATENT_CACHE_META = "latent_cache.json"
DEFAULT_CACHE_DIR = "gwp_latents"  # under the dataset root


class LatentCacheError(CheckpointError):
    """A latent cache is missing, incomplete or written for another geometry; the message names the file."""


def default_cache_dir(root: str | Path) -> Path:
    return Path(root) / DEFAULT_CACHE_DIR


def _episode_file(root: Path, source: int, episode: int) -> Path:
    return root / f"source_{source:03d}" / f"episode_{episode:06d}.safetensors"


def _device(module: torch.nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def write_latent_cache(dataset: Any, tokenizer: VideoTokenizer, out_dir: str | Path, *, batch_size: int = 8,
                       dtype: torch.dtype = torch.bfloat16, indices: Iterable[int] | None = None,
                       num_workers: int = 0) -> Path:
    """Encode the frame window of every sample (or of ``indices``) once and store the latents per episode.

    ``dataset``: a ``WindowedDataset`` without augmentation (``train=False``), or anything with ``__len__``,
    ``locate(i) -> (source, episode, frame)`` and ``__getitem__(i)`` giving ``image`` [3, H, W] and optionally
    ``future_frames`` [n, 3, H, W] in [-1, 1]. Samples are read in index order (``num_workers`` DataLoader
    processes decode them) and each episode's file is written as soon as the next episode starts, so memory
    holds one episode's latents: an episode's samples must be contiguous in ``indices``. The metadata file is
    written last; a cache interrupted while being (re)written has none and is refused by :class:`LatentCache`.
    """
    if getattr(dataset, "augments", False):
        raise LatentCacheError("write_latent_cache: the dataset draws random augmentation (train=True with "
                               "data.augment=true); cached latents come from the deterministic crop: build it "
                               "with train=False")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / LATENT_CACHE_META).unlink(missing_ok=True)
    todo = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    loader = DataLoader(Subset(dataset, todo), batch_size=batch_size, num_workers=num_workers, collate_fn=list,
                        multiprocessing_context=worker_context(num_workers))
    device = _device(tokenizer)
    shape: list[int] | None = None
    written: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    rows: dict[int, torch.Tensor] = {}  # anchor frame -> latents [C, 1 + f, h, w] of the current episode

    def flush() -> None:
        assert current is not None
        f = _episode_file(out, *current)
        f.parent.mkdir(parents=True, exist_ok=True)
        order = sorted(rows)
        tmp = f.with_suffix(".tmp")
        save_file({"frames": torch.tensor(order, dtype=torch.int64),
                   "latents": torch.stack([rows[k] for k in order]).contiguous()}, str(tmp))
        os.replace(tmp, f)
        written.append(current)

    pos = 0
    for samples in loader:
        chunk, pos = todo[pos:pos + len(samples)], pos + len(samples)
        frames = torch.stack([torch.cat([s["image"][None], s["future_frames"]]) if "future_frames" in s
                              else s["image"][None] for s in samples])  # [b, 1 + n, 3, H, W]
        lat = tokenizer.encode(frames.to(device)).to(dtype).cpu()  # [b, C, 1 + f, h, w]
        shape = list(lat.shape[1:])
        for i, z in zip(chunk, lat):
            src, ep, fr = (int(x) for x in dataset.locate(i))
            if (src, ep) != current:
                if current is not None:
                    flush()
                if (src, ep) in written:
                    raise ValueError(f"write_latent_cache: the samples of source {src}, episode {ep} are not "
                                     "contiguous in indices (its file is already written)")
                current, rows = (src, ep), {}
            rows[fr] = z
    if current is None or shape is None:
        raise ValueError("write_latent_cache: no samples to encode")
    flush()
    window_spec = getattr(dataset, "window_spec", None)
    meta = {"latent_shape": shape, "dtype": str(dtype).removeprefix("torch."),
            "tokenizer": {"class": type(tokenizer).__name__, "sha256": tokenizer.fingerprint()},
            "latent_channels": tokenizer.latent_channels, "spatial_compression": tokenizer.spatial_compression,
            "temporal_compression": tokenizer.temporal_compression,
            "episodes": sorted([list(k) for k in written]),
            "windows": ({str(s): window_spec(s) for s in sorted({s for s, _ in written})}
                        if callable(window_spec) else None)}
    tmp = out / (LATENT_CACHE_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out / LATENT_CACHE_META)
    return out


class LatentCache:
    """Reader for :func:`write_latent_cache`: ``get(source, episode, frame) -> latents [C, 1 + f, h, w]`` (fp32).

    ``expect_shape`` ([C, 1 + f, h, w]) refuses a cache written for another geometry. Each ``get`` reads one
    row (safetensors slices are memory-mapped), so random access over a large cache stays cheap; the small
    frame -> row index of each episode is kept. Safe to copy into DataLoader workers (no open handles).
    """

    def __init__(self, root: str | Path, *, expect_shape: Sequence[int] | None = None):
        self.root = Path(root)
        self.meta_file = self.root / LATENT_CACHE_META
        if not self.meta_file.is_file():
            raise LatentCacheError(f"{self.meta_file}: missing; not a (complete) latent cache (write one with "
                                   "gwp cache-latents)")
        self.meta = json.loads(self.meta_file.read_text())
        if expect_shape is not None and list(expect_shape) != self.meta["latent_shape"]:
            raise LatentCacheError(f"{self.meta_file}: latents have shape {self.meta['latent_shape']}, expected "
                                   f"{list(expect_shape)} [C, 1 + future latent frames, h, w] (stale cache?)")
        self._rows: dict[tuple[int, int], dict[int, int]] = {}

    def check_tokenizer(self, tokenizer: VideoTokenizer) -> None:
        """Refuse unless ``tokenizer`` (its class, weights, buffers and dtype) is the one that wrote the cache."""
        rec = self.meta.get("tokenizer")
        if not isinstance(rec, dict) or "sha256" not in rec:
            raise LatentCacheError(f"{self.meta_file}: records no tokenizer fingerprint (written by an older "
                                   "version); rewrite it with gwp cache-latents")
        ours = tokenizer.fingerprint()
        if rec["sha256"] != ours:
            raise LatentCacheError(f"{self.meta_file}: written by another tokenizer ({rec.get('class')} "
                                   f"sha256 {rec['sha256'][:12]}...) than this run's ({type(tokenizer).__name__} "
                                   f"sha256 {ours[:12]}...: other VAE weights or dtype); rewrite it with "
                                   "gwp cache-latents --vae <this run's VAE>")

    def check_dataset(self, window: dict[str, Any], episodes: Iterable[int], *, where: str) -> None:
        """Refuse unless this cache holds one dataset (source 0) read through ``window`` (the reader's
        ``WindowedDataset.window_spec``) and every one of its ``episodes``. ``where`` names the dataset."""
        sources = sorted({int(s) for s, _ in self.meta["episodes"]})
        if sources != [0]:
            raise LatentCacheError(f"{self.meta_file}: holds sources {sources}; training reads one cache per "
                                   f"dataset (gwp cache-latents --data {where})")
        theirs = (self.meta.get("windows") or {}).get("0")
        if theirs is None:
            raise LatentCacheError(f"{self.meta_file}: records no window (not written from a WindowedDataset); "
                                   f"rewrite it with gwp cache-latents --data {where}")
        diff = sorted(k for k in window.keys() | theirs.keys() if window.get(k) != theirs.get(k))
        if diff:
            what = "; ".join(f"{k}: cache {theirs.get(k)!r}, now {window.get(k)!r}" for k in diff)
            raise LatentCacheError(f"{self.meta_file}: written for another window of {where} ({what}); rewrite "
                                   "it with gwp cache-latents and the training config")
        missing = sorted(set(int(e) for e in episodes) - {int(e) for _, e in self.meta["episodes"]})
        if missing:
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise LatentCacheError(f"{self.meta_file}: episodes {missing[:10]}{more} of {where} are not cached")

    def _index(self, source: int, episode: int, frame: int) -> dict[int, int]:
        key = (source, episode)
        if key not in self._rows:
            f = _episode_file(self.root, source, episode)
            if not f.is_file():
                raise LatentCacheError(f"{f}: missing: episode {episode} (frame {frame}, source {source}) is not "
                                       f"in the latent cache {self.root}")
            with safe_open(str(f), framework="pt", device="cpu") as h:
                self._rows[key] = {int(fr): i for i, fr in enumerate(h.get_tensor("frames").tolist())}
        return self._rows[key]

    def get(self, source: int, episode: int, frame: int) -> torch.Tensor:
        rows = self._index(source, episode, frame)
        f = _episode_file(self.root, source, episode)
        if frame not in rows:
            raise LatentCacheError(f"{f}: episode {episode} has no cached frame {frame} (cached frames "
                                   f"{min(rows)}..{max(rows)}, {len(rows)} of them)")
        with safe_open(str(f), framework="pt", device="cpu") as h:
            return h.get_slice("latents")[rows[frame]].float()


# ------------------------------------------------------------------------------------------------
# gwp cache-latents
# ------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="LeRobot v3.0 dataset roots (one cache each)")
    p.add_argument("--preset", default="tiny", help="config preset (gwp presets lists them)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override (repeatable); use the training run's: training refuses a cache written "
                        "for another window")
    p.add_argument("--vae", default=None,
                   help="Wan 2.2 VAE directory (diffusers AutoencoderKLWan) for presets with video_tokenizer=wan2.2-vae")
    p.add_argument("--out", nargs="+", default=None, metavar="DIR",
                   help=f"cache directories, one per --data root (default ROOT/{DEFAULT_CACHE_DIR})")
    p.add_argument("--batch-size", type=int, default=8, help="windows encoded per tokenizer call")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader processes decoding frames")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="stored latent dtype")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (where the tokenizer runs)")


def run(args: argparse.Namespace) -> int:
    from gigaworld_policy.config import apply_overrides, get_preset
    from gigaworld_policy.data.windowed import WindowedDataset
    from gigaworld_policy.model.text import NullTextEncoder
    from gigaworld_policy.model.tokenizers import build_video_tokenizer
    from gigaworld_policy.model.wan import video_tokenizer_for

    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    outs = args.out or [default_cache_dir(r) for r in args.data]
    if len(outs) != len(args.data):
        raise SystemExit(f"gwp cache-latents: {len(outs)} --out directories for {len(args.data)} --data roots")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tok = video_tokenizer_for(cfg.model, args.vae, device=device) or build_video_tokenizer(cfg.model)
    assert tok is not None
    text = NullTextEncoder(cfg.model.text_dim)  # prompts are not cached here: no text model to load
    for root, out in zip(args.data, outs):
        t0 = time.monotonic()
        ds = WindowedDataset([root], cfg, train=False, text_encoder=text)
        path = write_latent_cache(ds, tok.to(device), out, batch_size=args.batch_size, num_workers=args.num_workers,
                                  dtype=getattr(torch, args.dtype))
        shape = json.loads((path / LATENT_CACHE_META).read_text())["latent_shape"]
        print(f"{root}: {len(ds)} windows -> {path} (latents {shape} {args.dtype}, {time.monotonic() - t0:.0f} s)")
    return 0

"""Training samples: a window of one episode around frame t, in the model's batch layout.

Per sample (the unbatched version of model/batch.py):
  state           float32 [s]           normalized state at t, zero-padded to model.state_dim
  image           float32 [3, h, w]     composed views at t, in [-1, 1]
  future_frames   float32 [f, 3, h, w]  composed views at t + data.future_offsets (past the episode end:
                                        the last real frame, flagged in future_is_pad)
  future_is_pad   bool    [f]
  actions         float32 [t, a]        normalized actions t .. t+T-1 (LeRobot: action[i] is issued at
                                        frame i); delta dims relative to the state at t; past the end:
                                        the last action, flagged in action_is_pad
  action_is_pad   bool    [t]
  action_dim_mask bool    [a]           True on the robot's real action dims
  text            float32 [l, e]        cached prompt embeddings of the frame's task; text_mask bool [l]
  embodiment_id   int64   []            from the embodiment registry
  aux_target      float32 [x]           only with model.aux_dim = x > 0: ``observation.environment_state`` at
                                        t, (value - mean) / std with the dataset's meta/stats.json
With a latent cache (``DataSource.latent_cache``, data/latent_cache.py) ``image``/``future_frames`` are
replaced by
  latents         float32 [C, 1 + f_lat, h_lat, w_lat]  the tokenizer's latents of the same frames, read
                                        from the cache (no frame is decoded); ``future_is_pad`` as above
:func:`collate` pads text to the longest prompt in the batch and stacks the rest.

Mixtures: several datasets, each with its own statistics, embodiment and weight;
:meth:`WindowedDataset.make_sampler` draws dataset k with probability weight_k / sum(weights).

Dims: s padded state, a padded action, t action steps, f future frames, l text tokens, e text width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from gigaworld_policy.config import Config
from gigaworld_policy.data.embodiments import Embodiment, check_num_embodiments, get_embodiment
from gigaworld_policy.data.errors import DatasetError
from gigaworld_policy.data.latent_cache import LatentCache
from gigaworld_policy.data.lerobot import LeRobotDataset
from gigaworld_policy.data.normalize import Normalizer, pad_last
from gigaworld_policy.data.stats import (
    ACTION_KEY,
    ENV_STATE_KEY,
    STATE_KEY,
    check_dataset_embodiment,
    load_or_compute_stats,
)
from gigaworld_policy.data.text_cache import DEFAULT_CACHE_NAME, TextEmbeddingCache
from gigaworld_policy.data.views import CAMERA_PREFIX, compose_views_sequence, resolve_cameras
from gigaworld_policy.model.text import TextEncoder, build_text_encoder


@dataclass(frozen=True)
class DataSource:
    """One dataset of a mixture."""

    root: str | Path
    weight: float = 1.0
    stats_path: str | Path | None = None  # default: <root>/meta/gwp_norm_stats-h<T>.json, else computed
    robot_type: str | None = None  # default: meta/info.json robot_type
    # gwp cache-latents output for this dataset and config: samples carry ``latents`` instead of pixels
    latent_cache: str | Path | None = None


@dataclass
class _Source:
    ds: LeRobotDataset
    weight: float
    embodiment: Embodiment
    normalizer: Normalizer
    cameras: list[str]  # names without the observation.images. prefix, tiling order
    text: dict[str, torch.Tensor]  # task -> [l, e]
    latents: LatentCache | None = None  # per process: DataLoader workers get their own copy
    aux: tuple[np.ndarray, np.ndarray] | None = None  # model.aux_dim: (mean, std) of the environment state


class WindowedDataset(Dataset):
    def __init__(self, sources: Sequence[DataSource | str | Path], cfg: Config, *, train: bool = True,
                 text_encoder: TextEncoder | None = None, cache_bytes: int = 256 << 20) -> None:
        if not sources:
            raise ValueError("WindowedDataset: no sources")
        self.cfg, self.train = cfg, train
        self.with_video = cfg.model.attention_mode != "no_video"
        encoder = text_encoder
        specs = [s if isinstance(s, DataSource) else DataSource(s) for s in sources]
        cached = [s.latent_cache is not None for s in specs]
        if any(cached) and not all(cached):  # a batch drawn across sources would mix latents and pixels
            raise ValueError("latent_cache: given for sources "
                             f"{[str(s.root) for s in specs if s.latent_cache is not None]} but not for "
                             f"{[str(s.root) for s in specs if s.latent_cache is None]}: give one for every source")
        self.sources: list[_Source] = []
        for spec in specs:
            if spec.weight <= 0:
                raise ValueError(f"{spec.root}: mixture weight must be > 0, got {spec.weight}")
            if encoder is None:
                encoder = build_text_encoder(cfg.data.text_encoder, max_tokens=cfg.model.max_text_tokens,
                                             dim=cfg.model.text_dim)
            if spec.latent_cache is not None and self.augments:
                raise ValueError(f"{spec.root}: latent_cache={spec.latent_cache} needs data.augment=false for "
                                 "training: cached latents come from the deterministic crop, random crops and colour "
                                 "jitter cannot be cached (pass --set data.augment=false)")
            self.sources.append(self._open_source(spec, encoder, cache_bytes, specs[: len(self.sources)]))
            if spec.latent_cache is not None:
                self.sources[-1].latents = self._open_latent_cache(len(self.sources) - 1, spec.latent_cache)
        self._starts = np.cumsum([0] + [len(s.ds) for s in self.sources])

    def _open_source(self, spec: DataSource, encoder: TextEncoder, cache_bytes: int,
                     before: Sequence[DataSource]) -> _Source:
        """``before``: the specs of the sources already open (self.sources, in order)."""
        cfg = self.cfg
        ds = LeRobotDataset(spec.root, cache_bytes=cache_bytes)
        emb = get_embodiment(spec.robot_type or ds.robot_type)
        check_num_embodiments(emb, cfg.model.num_embodiments)
        check_dataset_embodiment(ds, emb)
        # one normalization per robot: the first dataset's, which is the one the checkpoint keeps
        first = next((i for i, s in enumerate(self.sources) if s.embodiment.robot_type == emb.robot_type), None)
        if first is not None and spec.stats_path is not None and spec.stats_path != before[first].stats_path:
            raise ValueError(f"{spec.root}: stats_path={spec.stats_path} for a second {emb.robot_type!r} dataset; "
                             f"datasets of one robot share the first one's normalization ({before[first].root}): "
                             "give the stats_path there")
        for what, dim, have in (("state", cfg.model.state_dim, emb.state_dim),
                                ("action", cfg.model.action_dim, emb.action_dim)):
            if have > dim:
                raise ValueError(f"{ds.root}: {emb.robot_type!r} has {have} {what} dims but model.{what}_dim={dim}")
        if first is None:
            normalizer = Normalizer(load_or_compute_stats(ds, cfg.model.action_horizon, spec.stats_path, embodiment=emb),
                                    cfg.data.normalization)
        else:
            normalizer = self.sources[first].normalizer
        cameras = resolve_cameras(cfg.data.cameras, ds.camera_keys, where=str(ds.root))
        if encoder.dim != cfg.model.text_dim:
            raise ValueError(f"text encoder {encoder.encoder_id} gives {encoder.dim}-d, model.text_dim="
                             f"{cfg.model.text_dim}")
        cache = TextEmbeddingCache(Path(ds.root) / DEFAULT_CACHE_NAME)
        tasks = [t for t in ds.tasks if t]
        embs = cache.get_many(tasks, encoder) if tasks else []
        text = {t: e[: cfg.model.max_text_tokens].float() for t, e in zip(tasks, embs)}
        aux = aux_stats(ds, cfg.model.aux_dim) if cfg.model.aux_dim else None  # checks the dataset has it
        if aux is not None and first is not None:
            aux = self.sources[first].aux
        return _Source(ds, spec.weight, emb, normalizer, cameras, text, aux=aux)

    @property
    def augments(self) -> bool:
        """Whether samples carry random augmentation (then they cannot come from a latent cache)."""
        return self.train and self.cfg.data.augment

    def window_spec(self, source: int) -> dict[str, Any]:
        """Everything besides (episode, frame) that decides a sample's frames, hence its cached latents
        (recorded by write_latent_cache, compared when a cache is opened)."""
        src, cfg = self.sources[source], self.cfg
        return {"dataset_frames": len(src.ds), "dataset_episodes": src.ds.num_episodes, "cameras": list(src.cameras),
                "view_layout": cfg.data.view_layout, "crop_scale": cfg.data.crop_scale,
                "image_size": [cfg.model.image_height, cfg.model.image_width],
                "future_offsets": list(cfg.data.future_offsets) if self.with_video else [],
                "video_tokenizer": cfg.model.video_tokenizer}

    def describe(self) -> list[dict[str, Any]]:
        """What each source is, for a run's provenance: root, robot type, weight, size, and how the data was
        made (the dataset's meta/provenance.json: collector, seeds, noise, codec; None for outside data)."""
        return [{"root": str(Path(s.ds.root).resolve()), "robot_type": s.embodiment.robot_type, "weight": s.weight,
                 "episodes": s.ds.num_episodes, "frames": int(s.ds.info["total_frames"]),
                 "provenance": s.ds.provenance} for s in self.sources]

    def _open_latent_cache(self, source: int, path: str | Path) -> LatentCache:
        """Source ``source``'s cache: one dataset (cache source 0), this window, every episode."""
        m, ds = self.cfg.model, self.sources[source].ds
        cache = LatentCache(path, expect_shape=[m.latent_channels, 1 + m.future_latent_frames, *m.latent_hw])
        cache.check_dataset(self.window_spec(source), ds.episode_indices, where=str(ds.root))
        return cache

    # -- indexing / sampling --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int, int]:
        """Sample index -> (source, episode_index, frame_index)."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range [0, {len(self)})")
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        ep, f = self.sources[k].ds.locate(int(index - self._starts[k]))
        return k, ep, f

    def sample_weights(self) -> torch.Tensor:
        """Per-sample probability: dataset k gets weight_k / sum(weights), uniform inside a dataset."""
        total = sum(s.weight for s in self.sources)
        return torch.cat([torch.full((len(s.ds),), s.weight / total / len(s.ds), dtype=torch.float64)
                          for s in self.sources])

    def make_sampler(self, num_samples: int, generator: torch.Generator | None = None) -> WeightedRandomSampler:
        return WeightedRandomSampler(self.sample_weights(), num_samples, replacement=True, generator=generator)

    # -- one sample -----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, ep, f = self.locate(int(index))
        src, m = self.sources[k], self.cfg.model
        ds, n = src.ds, src.ds.episode_length(ep)
        state = ds.get_numeric(ep, STATE_KEY, np.asarray([f]))[0]
        steps = f + np.arange(m.action_horizon)
        action_is_pad = steps >= n
        actions = ds.get_numeric(ep, ACTION_KEY, np.minimum(steps, n - 1))
        where = f"{ds.root}: episode {ep}, frame {f}"
        out: dict[str, Any] = {
            "state": pad_last(src.normalizer.normalize_state(state), m.state_dim, what=where),
            "actions": pad_last(src.normalizer.normalize_actions(actions, state), m.action_dim, what=where),
            "action_is_pad": torch.from_numpy(action_is_pad),
            "action_dim_mask": torch.arange(m.action_dim) < src.embodiment.action_dim,
            "embodiment_id": torch.tensor(src.embodiment.id, dtype=torch.int64),
        }
        if src.aux is not None:
            mean, std = src.aux
            env_state = ds.get_numeric(ep, ENV_STATE_KEY, np.asarray([f]))[0]
            out["aux_target"] = ((env_state - mean) / std).astype(np.float32)
        offsets = np.asarray(self.cfg.data.future_offsets if self.with_video else (), dtype=np.int64)
        fut = f + offsets
        if src.latents is not None:
            out["latents"] = src.latents.get(0, ep, f)  # a cache holds one dataset, as its source 0
        else:
            frames = np.concatenate([[f], np.minimum(fut, n - 1)]).astype(np.int64)
            views = compose_views_sequence(self._images(src, ep, frames), self.cfg, cameras=src.cameras,
                                           train=self.train)
            out["image"] = views[0]
            if self.with_video:
                out["future_frames"] = views[1:]
        if self.with_video:
            out["future_is_pad"] = torch.from_numpy(fut >= n)
        task = ds.task_of(ep, f)
        if task not in src.text:
            raise KeyError(f"{where}: task {task!r} has no text embedding")
        out["text"] = src.text[task]
        out["text_mask"] = torch.ones(len(src.text[task]), dtype=torch.bool)
        return {k2: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k2, v in out.items()}

    def _images(self, src: _Source, ep: int, frames: np.ndarray) -> list[dict[str, np.ndarray]]:
        uniq = sorted(set(frames.tolist()))
        per_cam = {c: dict(zip(uniq, src.ds.get_images(ep, CAMERA_PREFIX + c, uniq))) for c in src.cameras}
        return [{c: per_cam[c][int(fr)] for c in src.cameras} for fr in frames]


def aux_stats(ds: LeRobotDataset, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of ``ds``'s ``observation.environment_state`` from its meta/stats.json (std floored at
    1e-4: a constant dim maps to 0), checked to be ``width`` (model.aux_dim) wide. Raises DatasetError."""
    where = f"{ds.root}: model.aux_dim={width} trains on {ENV_STATE_KEY!r}"
    if ENV_STATE_KEY not in ds.features:
        raise DatasetError(f"{where}, which this dataset does not have (features: {sorted(ds.features)}); "
                           "Meta-World datasets from gwp collect record it, or set model.aux_dim=0")
    have = list(ds.features[ENV_STATE_KEY]["shape"])
    if have != [width]:
        raise DatasetError(f"{where}: its shape is {have}, expected [{width}]")
    st = (ds.stats or {}).get(ENV_STATE_KEY)
    if not st or "mean" not in st or "std" not in st:
        raise DatasetError(f"{where}: meta/stats.json has no mean/std for it")
    mean, std = np.asarray(st["mean"], np.float64), np.asarray(st["std"], np.float64)
    if mean.shape != (width,) or std.shape != (width,) or not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise DatasetError(f"{where}: meta/stats.json mean/std must be {width} finite numbers, got {st['mean']!r}, "
                           f"{st['std']!r}")
    return mean, np.maximum(std, 1e-4)


def collate(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples into a model batch; text is zero-padded to the longest prompt (text_mask False)."""
    if not samples:
        raise ValueError("collate: empty batch")
    out: dict[str, torch.Tensor] = {}
    length = max(int(s["text"].shape[0]) for s in samples)
    e = int(samples[0]["text"].shape[1])
    text = torch.zeros(len(samples), length, e)
    mask = torch.zeros(len(samples), length, dtype=torch.bool)
    for i, s in enumerate(samples):
        li = int(s["text"].shape[0])
        text[i, :li], mask[i, :li] = s["text"], s["text_mask"]
    out["text"], out["text_mask"] = text, mask
    for key in samples[0]:
        if key not in ("text", "text_mask"):
            out[key] = torch.stack([s[key] for s in samples])
    return out

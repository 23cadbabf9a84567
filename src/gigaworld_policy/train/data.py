"""Training data: mixtures, held-out episodes, and a step-indexed deterministic sample stream.

Determinism contract (what makes kill-and-resume bit-identical): the samples of optimizer step ``s``
are a pure function of (seed, s), drawn for the *global* batch; rank r of W takes the contiguous
slice [r * B/W, (r+1) * B/W) of it, so ranks read disjoint parts of one stream and a 2-process run sees
the same global batch as a 1-process run. Each sample's augmentation is seeded by (seed, s, position)
inside the loader (any number of DataLoader workers gives the same samples). The sampler state saved
in a checkpoint is just the next step, plus a fingerprint of the sampling weights to catch a resume
on different data.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gigaworld_policy.config import Config
from gigaworld_policy.data.windowed import DataSource, WindowedDataset, collate
from gigaworld_policy.data.workers import worker_context

_MASK64 = (1 << 63) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions; no ``hash()``)."""
    h = hashlib.blake2b(np.asarray(parts, dtype=np.int64).tobytes(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & _MASK64


def parse_sources(data: str | Sequence[str | DataSource], weights: Sequence[float] | None = None,
                  latent_caches: Sequence[str | Path] | None = None) -> list[DataSource]:
    """``"dir1,dir2"`` or a list of paths / DataSources, with optional mixture weights and latent caches
    (one per dataset, same order)."""
    items = [s for s in data.split(",") if s] if isinstance(data, str) else list(data)
    if weights is not None and len(weights) != len(items):
        raise ValueError(f"--weights: {len(weights)} weights for {len(items)} datasets")
    if latent_caches is not None and len(latent_caches) != len(items):
        raise ValueError(f"--latent-cache: {len(latent_caches)} caches for {len(items)} datasets (one per --data "
                         "root, same order)")
    out = []
    for i, it in enumerate(items):
        src = it if isinstance(it, DataSource) else DataSource(it)
        if weights is not None:
            src = dataclasses.replace(src, weight=float(weights[i]))
        if latent_caches is not None:
            src = dataclasses.replace(src, latent_cache=latent_caches[i])
        out.append(src)
    return out


@dataclass(frozen=True)
class Split:
    """Training frames (global sample indices) and held-out episodes of every source of a mixture."""

    source_weights: torch.Tensor  # float64 [k]: mixture weights
    train_index: list[np.ndarray]  # per source: global sample indices outside the held-out episodes
    heldout: list[list[int]]  # per source: held-out episode indices

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.source_weights.numpy().tobytes())
        for idx in self.train_index:
            h.update(idx.tobytes())
        return h.hexdigest()[:16]


def split_episodes(ds: WindowedDataset, seed: int, holdout: int) -> Split:
    """Hold out ``holdout`` episodes per source (chosen by ``seed``; a source keeps at least one)."""
    train_index, heldout = [], []
    offset = 0
    for k, src in enumerate(ds.sources):
        eps = src.ds.episode_indices
        n_out = min(holdout, max(0, len(eps) - 1))
        rng = np.random.default_rng(derive_seed(seed, k, 7919))
        out = sorted(int(e) for e in rng.choice(eps, size=n_out, replace=False)) if n_out else []
        keep = np.ones(len(src.ds), dtype=bool)
        for e in out:
            start = src.ds.episode_start(e)
            keep[start:start + src.ds.episode_length(e)] = False
        train_index.append(np.flatnonzero(keep).astype(np.int64) + offset)
        heldout.append(out)
        offset += len(src.ds)
    weights = torch.tensor([s.weight for s in ds.sources], dtype=torch.float64)
    return Split(weights, train_index, heldout)


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps start..stop-1, this rank's ``[(sample index, sample seed), ...]``."""

    def __init__(self, split: Split, *, seed: int, global_batch: int, rank: int, world_size: int,
                 start_step: int, stop_step: int) -> None:
        if global_batch % world_size:
            raise ValueError(f"train.batch_size={global_batch} is not divisible by the {world_size} ranks")
        self.split, self.seed, self.global_batch = split, seed, global_batch
        self.rank, self.world_size = rank, world_size
        self.start_step, self.stop_step = start_step, stop_step

    def global_indices(self, step: int) -> list[int]:
        """The global batch of ``step``: a source by mixture weight, then a uniform training frame of it."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, step, 1))
        src = torch.multinomial(self.split.source_weights, self.global_batch, replacement=True, generator=g)
        u = torch.rand(self.global_batch, generator=g, dtype=torch.float64)
        out = []
        for k, x in zip(src.tolist(), u.tolist()):
            pool = self.split.train_index[k]
            out.append(int(pool[min(int(x * len(pool)), len(pool) - 1)]))
        return out

    def indices(self, step: int) -> list[tuple[int, int]]:
        per = self.global_batch // self.world_size
        lo = self.rank * per
        idx = self.global_indices(step)[lo:lo + per]
        return [(i, derive_seed(self.seed, step, 2, lo + j)) for j, i in enumerate(idx)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.stop_step):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step)


class SeededSamples(Dataset):
    """``ds[(index, seed)]``: the sample with its random augmentation drawn from ``seed``."""

    def __init__(self, ds: WindowedDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.ds[index]


def make_loader(ds: WindowedDataset, sampler: StepBatchSampler, num_workers: int) -> DataLoader:
    return DataLoader(SeededSamples(ds), batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      persistent_workers=False, prefetch_factor=2 if num_workers else None,
                      multiprocessing_context=worker_context(num_workers))


def norm_stats_entries(sources: Sequence[DataSource], ds: WindowedDataset) -> dict[str, object]:
    """``{"sources": [{"robot_type", "embodiment_id", "stats", "cameras"}, ...]}`` for the checkpoint (one per robot);
    with model.aux_dim also ``"environment_state": {"names", "mean", "std"}`` (the head's target normalization)."""
    from gigaworld_policy.data.stats import ENV_STATE_KEY, load_or_compute_stats

    out, seen = [], set()
    for spec, src in zip(sources, ds.sources):
        emb = src.embodiment
        if emb.robot_type in seen:  # one entry per robot type: the first dataset's statistics
            continue
        seen.add(emb.robot_type)
        stats = load_or_compute_stats(src.ds, ds.cfg.model.action_horizon, spec.stats_path, embodiment=emb)
        # the camera tiling order used in training travels with the checkpoint (the Policy reads it)
        entry = {"robot_type": emb.robot_type, "embodiment_id": emb.id, "stats": stats,
                 "dataset": str(src.ds.root), "cameras": list(src.cameras)}
        if src.aux is not None:  # model.aux_dim: how the head's targets were normalized (probes read it)
            entry["environment_state"] = {"names": src.ds.features[ENV_STATE_KEY].get("names"),
                                          "mean": src.aux[0].tolist(), "std": src.aux[1].tolist()}
        out.append(entry)
    return {"sources": out}


def open_datasets(sources: Sequence[DataSource], cfg: Config) -> tuple[WindowedDataset, WindowedDataset]:
    """(training view with augmentation, evaluation view without), sharing one text encoder. Latent caches
    serve the training view only: evaluation decodes pixels (observations, and real frames in its plots)."""
    from gigaworld_policy.model.text import build_text_encoder

    enc = build_text_encoder(cfg.data.text_encoder, max_tokens=cfg.model.max_text_tokens, dim=cfg.model.text_dim)
    train = WindowedDataset(sources, cfg, train=True, text_encoder=enc)
    pixels = [dataclasses.replace(s, latent_cache=None) for s in sources]
    evaluation = WindowedDataset(pixels, cfg, train=False, text_encoder=enc)
    return train, evaluation

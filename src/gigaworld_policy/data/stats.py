"""Normalization statistics of LeRobot datasets, in the space the model sees (``gwp stats``).

State stats are over frames. Action stats are over the action chunks the model is trained on: for an
embodiment with delta dims, every (frame t, offset k < action_horizon, t + k inside the episode) pair
contributes ``action[t + k] - state[t]`` on delta dims and ``action[t + k]`` on absolute dims; without
delta dims each frame's action counts once.

Streaming with bounded memory (one episode at a time), two passes: pass 1 gives count, mean, std, min,
max exactly (float64 sums); pass 2 fills a fixed histogram of ``bins`` bins per dimension between min
and max, and q01/q99 are read from it with linear interpolation inside a bin, so their error is at most
(max - min) / bins per dimension (4096 bins: 0.025% of the range).

The JSON carries a fingerprint of the dataset (sha256 of meta/info.json, totals, state/action shapes)
and the settings the action stats depend on (robot type, delta mask, action horizon); loading it for
another dataset or other settings raises StatsMismatchError.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from gigaworld_policy.data.embodiments import Embodiment, get_embodiment
from gigaworld_policy.data.errors import DatasetError, StatsMismatchError
from gigaworld_policy.data.lerobot import INFO_PATH, LeRobotDataset

STATS_FORMAT = "gigaworld_policy.norm_stats/1"
STATE_KEY, ACTION_KEY = "observation.state", "action"
ENV_STATE_KEY = "observation.environment_state"  # LeRobot's scene state: a training target only (model.aux_dim)
DEFAULT_STATS_NAME = "meta/gwp_norm_stats.json"


def default_stats_path(root: str | Path, action_horizon: int) -> Path:
    return Path(root) / DEFAULT_STATS_NAME.replace(".json", f"-h{action_horizon}.json")


def dataset_fingerprint(ds: LeRobotDataset) -> dict[str, Any]:
    info_text = json.dumps(ds.info, sort_keys=True)
    return {"info_sha256": hashlib.sha256(info_text.encode()).hexdigest(),
            "total_frames": len(ds), "total_episodes": ds.num_episodes,
            "features": {k: list(ds.features[k]["shape"]) for k in (STATE_KEY, ACTION_KEY) if k in ds.features}}


def chunk_actions(actions: np.ndarray, state: np.ndarray, delta: np.ndarray, horizon: int) -> np.ndarray:
    """Model-space action values of one episode: [m, a] (see module docstring)."""
    if not delta.any():
        return actions.astype(np.float64)
    n = len(actions)
    t = np.repeat(np.arange(n), horizon)
    k = np.tile(np.arange(horizon), n)
    ok = t + k < n
    t, k = t[ok], k[ok]
    v = actions[t + k].astype(np.float64)
    cols = np.flatnonzero(delta)  # delta action dim j is relative to state dim j
    v[:, cols] -= state[t][:, cols]
    return v


class _Moments:
    def __init__(self, d: int) -> None:
        self.n, self.s, self.ss = 0, np.zeros(d), np.zeros(d)
        self.lo, self.hi = np.full(d, np.inf), np.full(d, -np.inf)

    def add(self, x: np.ndarray) -> None:
        self.n += len(x)
        self.s += x.sum(0)
        self.ss += (x * x).sum(0)
        self.lo, self.hi = np.minimum(self.lo, x.min(0)), np.maximum(self.hi, x.max(0))


class _Histogram:
    def __init__(self, lo: np.ndarray, hi: np.ndarray, bins: int) -> None:
        self.lo, self.width, self.bins = lo, np.maximum(hi - lo, 1e-12), bins
        self.counts = np.zeros((len(lo), bins), dtype=np.int64)

    def add(self, x: np.ndarray) -> None:
        d = x.shape[1]
        idx = np.clip(((x - self.lo) / self.width * self.bins).astype(np.int64), 0, self.bins - 1)
        idx += np.arange(d) * self.bins
        self.counts += np.bincount(idx.ravel(), minlength=d * self.bins).reshape(d, self.bins)

    def quantile(self, q: float) -> np.ndarray:
        out = np.empty(len(self.lo))
        for j, c in enumerate(self.counts):
            cum = np.cumsum(c)
            target = q * cum[-1]
            b = int(np.searchsorted(cum, target, side="left"))
            before = cum[b - 1] if b > 0 else 0
            frac = (target - before) / max(c[b], 1)
            out[j] = self.lo[j] + (b + frac) / self.bins * self.width[j]
        return out


def _episode_values(ds: LeRobotDataset, ep: int, emb: Embodiment, horizon: int) -> dict[str, np.ndarray]:
    state = ds.episode_numeric(ep, STATE_KEY).reshape(ds.episode_length(ep), -1)
    action = ds.episode_numeric(ep, ACTION_KEY).reshape(ds.episode_length(ep), -1)
    return {STATE_KEY: state.astype(np.float64),
            ACTION_KEY: chunk_actions(action, state, emb.delta_mask_array(), horizon)}


def check_dataset_embodiment(ds: LeRobotDataset, emb: Embodiment) -> None:
    for key, dim in ((STATE_KEY, emb.state_dim), (ACTION_KEY, emb.action_dim)):
        if key not in ds.features:
            raise DatasetError(f"{ds.root / INFO_PATH}: feature {key!r} is missing")
        shape = list(ds.features[key]["shape"])
        if shape != [dim]:
            raise DatasetError(f"{ds.root / INFO_PATH}: feature {key!r} has shape {shape}, but embodiment "
                               f"{emb.robot_type!r} has {dim} dims")


def compute_norm_stats(ds: LeRobotDataset, action_horizon: int, *, embodiment: Embodiment | None = None,
                       bins: int = 4096) -> dict[str, Any]:
    """Stats JSON (as a dict) of ``ds`` for chunks of ``action_horizon`` steps."""
    emb = embodiment or get_embodiment(ds.robot_type)
    check_dataset_embodiment(ds, emb)
    moments = {STATE_KEY: _Moments(emb.state_dim), ACTION_KEY: _Moments(emb.action_dim)}
    for ep in ds.episode_indices:
        for k, v in _episode_values(ds, ep, emb, action_horizon).items():
            moments[k].add(v)
    hists = {k: _Histogram(m.lo, m.hi, bins) for k, m in moments.items()}
    for ep in ds.episode_indices:
        for k, v in _episode_values(ds, ep, emb, action_horizon).items():
            hists[k].add(v)
    stats = {}
    for k, m in moments.items():
        mean = m.s / m.n
        std = np.sqrt(np.maximum(m.ss / m.n - mean * mean, 0.0))
        stats[k] = {"mean": mean.tolist(), "std": std.tolist(), "min": m.lo.tolist(), "max": m.hi.tolist(),
                    "q01": hists[k].quantile(0.01).tolist(), "q99": hists[k].quantile(0.99).tolist(),
                    "count": m.n}
    return {"format": STATS_FORMAT, "fingerprint": dataset_fingerprint(ds), "robot_type": emb.robot_type,
            "action_horizon": int(action_horizon), "delta_mask": list(emb.delta_mask), "quantile_bins": bins,
            "quantile_max_error": {k: ((np.asarray(stats[k]["max"]) - stats[k]["min"]) / bins).tolist()
                                   for k in stats},
            "stats": stats}


def save_stats(stats: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2))
    tmp.replace(path)
    return path


def load_stats(path: str | Path, ds: LeRobotDataset | None = None, *, action_horizon: int | None = None,
               embodiment: Embodiment | None = None) -> dict[str, Any]:
    """Read a stats JSON; when given, check it belongs to ``ds`` and these settings."""
    path = Path(path)
    try:
        stats = json.loads(path.read_text())
    except FileNotFoundError:
        raise StatsMismatchError(f"{path}: stats file is missing (create it with `gwp stats`)") from None
    if stats.get("format") != STATS_FORMAT:
        raise StatsMismatchError(f"{path}: not a {STATS_FORMAT} file (format={stats.get('format')!r})")
    if ds is not None:
        want, have = dataset_fingerprint(ds), stats["fingerprint"]
        if want != have:
            diff = sorted(k for k in want if want.get(k) != have.get(k))
            raise StatsMismatchError(f"{path}: statistics were computed for another dataset, not {ds.root} "
                                     f"(fingerprint differs in {diff}); recompute with `gwp stats {ds.root}`")
    if action_horizon is not None and stats["action_horizon"] != action_horizon:
        raise StatsMismatchError(f"{path}: action stats are for action_horizon={stats['action_horizon']}, "
                                 f"the model uses {action_horizon}")
    if embodiment is not None and (stats["robot_type"] != embodiment.robot_type
                                   or list(stats["delta_mask"]) != list(embodiment.delta_mask)):
        raise StatsMismatchError(f"{path}: stats are for robot_type={stats['robot_type']!r} with delta_mask="
                                 f"{stats['delta_mask']}, not {embodiment.robot_type!r} {list(embodiment.delta_mask)}")
    return stats


def load_or_compute_stats(ds: LeRobotDataset, action_horizon: int, path: str | Path | None = None,
                          *, embodiment: Embodiment | None = None) -> dict[str, Any]:
    """The stats file at ``path`` (default: the dataset's own for this horizon) if it exists, checked;
    otherwise computed in memory (not written)."""
    emb = embodiment or get_embodiment(ds.robot_type)
    p = Path(path) if path is not None else default_stats_path(ds.root, action_horizon)
    if path is not None or p.is_file():
        return load_stats(p, ds, action_horizon=action_horizon, embodiment=emb)
    return compute_norm_stats(ds, action_horizon, embodiment=emb)


# -- CLI: gwp stats DATASET... ------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="+", metavar="DATASET", help="LeRobot v3.0 dataset directories")
    parser.add_argument("--action-horizon", type=int, default=None,
                        help="action chunk length (default: model.action_horizon of --preset)")
    parser.add_argument("--preset", default="tiny", help="config preset giving the action horizon")
    parser.add_argument("--bins", type=int, default=4096, help="histogram bins per dim for q01/q99")
    parser.add_argument("--out", default=None,
                        help="output file (one dataset only); default DATASET/meta/gwp_norm_stats-h<T>.json")


def run(args: argparse.Namespace) -> int:
    from gigaworld_policy.config import get_preset

    horizon = args.action_horizon or get_preset(args.preset).model.action_horizon
    if args.out and len(args.datasets) > 1:
        raise SystemExit("--out works with one dataset only")
    for root in args.datasets:
        ds = LeRobotDataset(root)
        stats = compute_norm_stats(ds, horizon, bins=args.bins)
        path = save_stats(stats, args.out or default_stats_path(root, horizon))
        print(f"{root}: {len(ds)} frames, {ds.num_episodes} episodes, horizon {horizon} -> {path}")
    return 0

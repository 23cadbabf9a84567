"""State/action normalization with exact inverses, shared by the training data and the Policy.

Quantile mode (default, DESIGN.md): x -> (x - c) / h with c = (q01 + q99) / 2, h = (q99 - q01) / 2, so
q01 -> -1 and q99 -> 1. Mean/std mode: x -> (x - mean) / std. ``h``/``std`` below ``eps`` count as
``eps`` (a constant dim maps to 0). Normalized values are clipped to [-clip, clip] (default 1.5 for
quantile, 5 for meanstd): rare outliers past q01/q99 would otherwise dominate the loss. Unnormalizing
never clips, so ``unnormalize(normalize(x)) == x`` up to float error for values inside the clip range.

Delta actions: dims where the embodiment's ``delta_mask`` is True are ``action - state`` (same-index
state dim of the current frame) before normalization, and get the state added back after.

Dims: t action steps, a robot action dims, s robot state dims ("..." any leading batch dims).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gigaworld_policy.data.errors import DatasetError
from gigaworld_policy.data.stats import ACTION_KEY, STATE_KEY

DEFAULT_CLIP = {"quantile": 1.5, "meanstd": 5.0}


class Normalizer:
    def __init__(self, stats: dict[str, Any], mode: str = "quantile", *, clip: float | None = None,
                 eps: float = 1e-4) -> None:
        if mode not in DEFAULT_CLIP:
            raise ValueError(f"normalization mode must be 'quantile' or 'meanstd', got {mode!r}")
        self.mode = mode
        self.clip = DEFAULT_CLIP[mode] if clip is None else float(clip)
        self.delta_mask = np.asarray(stats["delta_mask"], dtype=bool)
        self.robot_type = stats.get("robot_type")
        self._center, self._scale = {}, {}
        for key in (STATE_KEY, ACTION_KEY):
            st = stats["stats"][key]
            if mode == "quantile":
                lo, hi = np.asarray(st["q01"], np.float64), np.asarray(st["q99"], np.float64)
                c, h = (lo + hi) / 2, (hi - lo) / 2
            else:
                c, h = np.asarray(st["mean"], np.float64), np.asarray(st["std"], np.float64)
            self._center[key], self._scale[key] = c, np.maximum(h, eps)
        self.state_dim = len(self._center[STATE_KEY])
        self.action_dim = len(self._center[ACTION_KEY])
        self._delta_cols = np.flatnonzero(self.delta_mask)

    def _check(self, x: np.ndarray, dim: int, what: str) -> None:
        if x.shape[-1] != dim:
            raise DatasetError(f"{what}: expected last dim {dim} ({self.robot_type}), got shape {list(x.shape)}")

    def _norm(self, x: np.ndarray, key: str) -> np.ndarray:
        y = (x - self._center[key]) / self._scale[key]
        return np.clip(y, -self.clip, self.clip).astype(np.float32)

    def _unnorm(self, y: np.ndarray, key: str) -> np.ndarray:
        return y.astype(np.float64) * self._scale[key] + self._center[key]

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        """[..., s] robot units -> [..., s] float32."""
        state = np.asarray(state, np.float64)
        self._check(state, self.state_dim, "state")
        return self._norm(state, STATE_KEY)

    def to_model_actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Absolute [..., t, a] -> model space (delta dims relative to ``state`` [..., s]), not normalized."""
        a = np.array(actions, np.float64)
        self._check(a, self.action_dim, "actions")
        s = np.asarray(state, np.float64)
        self._check(s, self.state_dim, "state")
        a[..., self._delta_cols] -= s[..., None, self._delta_cols]
        return a

    def normalize_actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Absolute robot actions [..., t, a] and current state [..., s] -> normalized [..., t, a] float32."""
        return self._norm(self.to_model_actions(actions, state), ACTION_KEY)

    def unnormalize_actions(self, normalized: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Normalized [..., t, a] (model output, robot dims only) -> absolute robot units [..., t, a] float32."""
        y = np.asarray(normalized)
        self._check(y, self.action_dim, "normalized actions")
        s = np.asarray(state, np.float64)
        self._check(s, self.state_dim, "state")
        a = self._unnorm(y, ACTION_KEY)
        a[..., self._delta_cols] += s[..., None, self._delta_cols]
        return a.astype(np.float32)

    def unnormalize_state(self, normalized: np.ndarray) -> np.ndarray:
        return self._unnorm(np.asarray(normalized), STATE_KEY).astype(np.float32)


def pad_last(x: np.ndarray, dim: int, *, what: str) -> np.ndarray:
    """Zero-pad the last axis to ``dim`` (the model's padded width)."""
    if x.shape[-1] > dim:
        raise DatasetError(f"{what}: robot has {x.shape[-1]} dims but the model pads to {dim}; "
                           f"raise the model's dim to at least {x.shape[-1]}")
    pad = [(0, 0)] * (x.ndim - 1) + [(0, dim - x.shape[-1])]
    return np.pad(x, pad)

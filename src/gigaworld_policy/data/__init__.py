"""Data pipeline: LeRobot v3.0 read/write, normalization, views, windowed training samples.

Torch-dependent names (WindowedDataset, collate, compose_views, ...) load on first access so that
``gwp`` stays cheap to start.
"""

from __future__ import annotations

import importlib
from typing import Any

from gigaworld_policy.data.embodiments import EMBODIMENTS, Embodiment, get_embodiment, register_embodiment
from gigaworld_policy.data.errors import DatasetError, StatsMismatchError, VideoEncodeError
from gigaworld_policy.data.lerobot import LeRobotDataset, open_dataset
from gigaworld_policy.data.normalize import Normalizer
from gigaworld_policy.data.stats import compute_norm_stats, load_or_compute_stats, load_stats, save_stats
from gigaworld_policy.data.writer import LeRobotWriter

_LAZY = {
    "WindowedDataset": "gigaworld_policy.data.windowed", "DataSource": "gigaworld_policy.data.windowed",
    "collate": "gigaworld_policy.data.windowed", "compose_views": "gigaworld_policy.data.views",
    "compose_views_sequence": "gigaworld_policy.data.views", "TextEmbeddingCache": "gigaworld_policy.data.text_cache",
}

__all__ = [
    "EMBODIMENTS", "DatasetError", "Embodiment", "LeRobotDataset", "LeRobotWriter", "Normalizer",
    "StatsMismatchError", "VideoEncodeError", "compute_norm_stats", "get_embodiment", "load_or_compute_stats", "load_stats",
    "open_dataset", "register_embodiment", "save_stats", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gigaworld_policy.data' has no attribute {name!r}")

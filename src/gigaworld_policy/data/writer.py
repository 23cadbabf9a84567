"""LeRobotWriter: record episodes as a LeRobot v3.0 dataset (layout in data/lerobot.py).

The dataset is built in a hidden sibling directory (``.<name>.tmp-<pid>``) and published with one
``os.replace`` in :meth:`LeRobotWriter.finalize`, so an interrupted run never leaves a directory at
``root`` that looks complete. Videos: H.264 (libx264, yuv420p, GOP 2, no B-frames) by default, AV1
(libsvtav1, lerobot 0.4's default) on request (``codec``; why H.264 first: data/video.py
``pick_video_codec``); several episodes per mp4 until ``video_files_size_in_mb``.

Dims: n frames of an episode, d feature width, H/W image height/width.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from gigaworld_policy.data.errors import DatasetError
from gigaworld_policy.data.lerobot import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    EPISODES_PATH,
    INFO_PATH,
    PROVENANCE_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
)
from gigaworld_policy.data.video import VideoAppender, pick_video_codec, probe_video

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # lerobot 0.4 writes q01, q10, q50, q90, q99


def _qname(q: float) -> str:
    return f"q{round(q * 100):02d}"


def feature_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats of [n, d] values (images: [n, H, W, 3] uint8 -> per channel in [0, 1],
    shape [3, 1, 1] as lerobot stores them)."""
    count = len(x)
    if x.ndim == 4:
        x = (x.reshape(-1, 3).astype(np.float64) / 255.0)
        reshape = (3, 1, 1)
    else:
        x = x.reshape(len(x), -1).astype(np.float64)
        reshape = (x.shape[1],)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    for q in QUANTILES:
        out[_qname(q)] = np.quantile(x, q, axis=0)
    out = {k: v.reshape(reshape) for k, v in out.items()}
    out["count"] = np.array([count])
    return out


def aggregate_stats(per_episode: list[dict[str, np.ndarray]], counts: list[int]) -> dict[str, np.ndarray]:
    """Pool per-episode stats: exact min/max/mean/std; quantiles are count-weighted means of the
    episodes' quantiles (lerobot's approximation; our normalization stats come from data/stats.py)."""
    w = np.asarray(counts, dtype=np.float64)
    w = w / w.sum()
    stack = {k: np.stack([s[k] for s in per_episode]) for k in per_episode[0] if k != "count"}
    wb = w.reshape(-1, *([1] * (stack["mean"].ndim - 1)))
    mean = (wb * stack["mean"]).sum(0)
    var = (wb * (stack["std"] ** 2 + (stack["mean"] - mean) ** 2)).sum(0)
    out = {"min": stack["min"].min(0), "max": stack["max"].max(0), "mean": mean, "std": np.sqrt(var),
           "count": np.array([int(sum(counts))])}
    for q in QUANTILES:
        out[_qname(q)] = (wb * stack[_qname(q)]).sum(0)
    return out


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _arrow_column(values: np.ndarray, ft: dict[str, Any]) -> pa.Array:
    shape = list(ft["shape"])
    if shape == [1]:
        return pa.array(values.reshape(-1))
    flat = pa.array(values.reshape(-1))
    arr: pa.Array = flat
    for n in reversed(shape):
        arr = pa.FixedSizeListArray.from_arrays(arr, int(n))
    return arr


class LeRobotWriter:
    """Write a LeRobot v3.0 dataset; API in docs/CONTRACTS.md.

    ``features``: {name: {"dtype": "float32"|"int64"|"video"|"image", "shape": [...], "names": [...]|None}}.
    Image/video features take uint8 [H, W, 3]. ``timestamp``, ``frame_index``, ``episode_index``,
    ``index`` and ``task_index`` are added by the writer.
    """

    def __init__(self, root: str | Path, *, fps: int, robot_type: str | None, features: dict[str, dict],
                 codec: str | None = None, chunks_size: int = DEFAULT_CHUNK_SIZE,
                 data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
                 video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB, overwrite: bool = False) -> None:
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise DatasetError(f"{self.root}: already exists (pass overwrite=True to replace it)")
        self.overwrite = overwrite
        self.fps = int(fps)
        if self.fps != fps or fps <= 0:
            raise DatasetError(f"fps must be a positive integer (LeRobot stores an int), got {fps}")
        self.robot_type = robot_type
        for name, ft in features.items():
            if "/" in name:
                raise DatasetError(f"feature {name!r}: names must not contain '/'")
            if ft.get("dtype") not in ("float32", "float64", "int64", "int32", "bool", "video", "image"):
                raise DatasetError(f"feature {name!r}: unsupported dtype {ft.get('dtype')!r}")
            if ft["dtype"] in ("video", "image") and (len(ft["shape"]) != 3 or ft["shape"][2] != 3):
                raise DatasetError(f"feature {name!r}: image shape must be [H, W, 3], got {ft['shape']}")
        self.features = {k: {"dtype": v["dtype"], "shape": list(v["shape"]),
                             "names": (["height", "width", "channels"] if v["dtype"] in ("video", "image")
                                       else v.get("names"))}
                         for k, v in features.items() if k not in DEFAULT_FEATURES}
        self.features.update({k: dict(v) for k, v in DEFAULT_FEATURES.items()})
        self.user_keys = [k for k in self.features if k not in DEFAULT_FEATURES]
        self.video_keys = [k for k, v in self.features.items() if v["dtype"] == "video"]
        self.codec = pick_video_codec(codec) if self.video_keys else None
        self.chunks_size = int(chunks_size)
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self.tmp = self.root.parent / f".{self.root.name}.tmp-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.total_frames = 0
        self._buffer: list[dict[str, Any]] = []
        self._data_tables: list[pa.Table] = []
        self._data_bytes = 0
        self._data_pos = (0, 0)  # (chunk_index, file_index) of the data file being filled
        self._videos: dict[str, VideoAppender] = {}
        self._video_pos = dict.fromkeys(self.video_keys, (0, 0))
        self._finalized = False

    # -- recording --------------------------------------------------------------------------
    def add_frame(self, frame: dict[str, Any], task: str) -> None:
        """Buffer one frame. Keys: every user feature; values are checked against the features."""
        missing = [k for k in self.user_keys if k not in frame]
        extra = [k for k in frame if k not in self.features and k != "task"]
        if missing or extra:
            raise DatasetError(f"add_frame: missing features {missing}, unknown features {extra}")
        ep, fi = len(self.episodes), len(self._buffer)
        row: dict[str, Any] = {"task": str(task)}
        for k in self.user_keys:
            ft = self.features[k]
            v = np.asarray(frame[k])
            if ft["dtype"] in ("video", "image"):
                if v.dtype != np.uint8 or list(v.shape) != ft["shape"]:
                    raise DatasetError(f"add_frame: feature {k!r} (episode {ep}, frame {fi}) must be uint8 "
                                       f"{ft['shape']}, got {v.dtype} {list(v.shape)}")
            else:
                v = v.astype(ft["dtype"]).reshape(ft["shape"])
                if v.dtype.kind == "f" and not np.isfinite(v).all():
                    raise DatasetError(f"add_frame: feature {k!r} has NaN/inf at episode {ep}, frame {fi}")
            row[k] = v
        self._buffer.append(row)

    def discard_episode(self) -> None:
        self._buffer = []

    def save_episode(self) -> None:
        """Commit the buffered episode: append its rows to the data file, encode its videos."""
        if not self._buffer:
            raise DatasetError("save_episode: no frames buffered (call add_frame first)")
        ep, n = len(self.episodes), len(self._buffer)
        meta: dict[str, Any] = {"episode_index": ep, "length": n, "dataset_from_index": self.total_frames,
                                "dataset_to_index": self.total_frames + n}
        task_ids = [self.tasks.setdefault(r["task"], len(self.tasks)) for r in self._buffer]
        meta["tasks"] = list(dict.fromkeys(r["task"] for r in self._buffer))
        cols = {k: np.stack([r[k] for r in self._buffer]) for k in self.user_keys}
        cols["timestamp"] = (np.arange(n) / self.fps).astype(np.float32)
        cols["frame_index"] = np.arange(n, dtype=np.int64)
        cols["episode_index"] = np.full(n, ep, dtype=np.int64)
        cols["index"] = np.arange(self.total_frames, self.total_frames + n, dtype=np.int64)
        cols["task_index"] = np.asarray(task_ids, dtype=np.int64)
        self._append_data(cols, meta)
        for k in self.video_keys:
            self._append_video(k, cols[k], meta)
        meta["stats"] = {k: feature_stats(v) for k, v in cols.items()}
        meta["meta/episodes/chunk_index"], meta["meta/episodes/file_index"] = 0, 0
        self.episodes.append(meta)
        self.total_frames += n
        self._buffer = []

    def _append_data(self, cols: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        arrays = {}
        for k, ft in self.features.items():
            if ft["dtype"] == "video":
                continue
            if ft["dtype"] == "image":
                arrays[k] = pa.array([{"bytes": _png(img), "path": None} for img in cols[k]],
                                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
            else:
                arrays[k] = _arrow_column(cols[k], ft)
        table = pa.table(arrays)
        if self._data_tables and self._data_bytes + table.nbytes > self.data_files_size_in_mb * 2**20:
            self._flush_data()
            self._data_pos = self._next(self._data_pos)
        self._data_tables.append(table)
        self._data_bytes += table.nbytes
        meta["data/chunk_index"], meta["data/file_index"] = self._data_pos

    def _flush_data(self) -> None:
        if not self._data_tables:
            return
        c, f = self._data_pos
        path = self.tmp / DATA_PATH.format(chunk_index=c, file_index=f)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self._data_tables), path)
        self._data_tables, self._data_bytes = [], 0

    def _append_video(self, key: str, frames: np.ndarray, meta: dict[str, Any]) -> None:
        app = self._videos.get(key)
        if app is not None and app.estimated_bytes() > self.video_files_size_in_mb * 2**20:
            app.close()
            self._video_pos[key] = self._next(self._video_pos[key])
            app = None
        if app is None:
            c, f = self._video_pos[key]
            h, w, _ = self.features[key]["shape"]
            assert self.codec is not None
            app = self._videos[key] = VideoAppender(
                self.tmp / VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f), self.fps, w, h, self.codec)
        t0, t1 = app.append(frames)
        c, f = self._video_pos[key]
        meta.update({f"videos/{key}/chunk_index": c, f"videos/{key}/file_index": f,
                     f"videos/{key}/from_timestamp": t0, f"videos/{key}/to_timestamp": t1})

    def _next(self, pos: tuple[int, int]) -> tuple[int, int]:
        c, f = pos
        return (c + 1, 0) if f + 1 >= self.chunks_size else (c, f + 1)

    # -- publishing -------------------------------------------------------------------------
    def finalize(self, provenance: dict[str, Any] | None = None) -> Path:
        """Write meta/ and publish the dataset at ``root`` atomically. Returns ``root``.

        ``provenance``: JSON-serialisable facts about how the data was made (collector, seeds, noise,
        codec, ...), written to meta/provenance.json, outside LeRobot's own files."""
        if self._finalized:
            raise DatasetError(f"{self.root}: finalize() was already called")
        if self._buffer:
            raise DatasetError(f"{self.root}: {len(self._buffer)} buffered frames not saved; call save_episode() "
                               f"or discard_episode() before finalize()")
        if not self.episodes:
            raise DatasetError(f"{self.root}: no episodes saved")
        try:
            provenance_text = None if provenance is None else json.dumps(provenance, indent=4, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{self.root}: provenance is not JSON-serialisable ({e})") from None
        self._flush_data()
        for app in self._videos.values():
            app.close()
        if provenance_text is not None:
            (self.tmp / "meta").mkdir(exist_ok=True)
            (self.tmp / PROVENANCE_PATH).write_text(provenance_text)
        self._write_meta()
        self._publish()
        self._finalized = True
        return self.root

    def _write_meta(self) -> None:
        (self.tmp / "meta").mkdir(exist_ok=True)
        tasks = pd.DataFrame({"task_index": list(self.tasks.values())},
                             index=pd.Index(list(self.tasks), name="task"))
        tasks.to_parquet(self.tmp / TASKS_PATH)
        rows = []
        for meta in self.episodes:
            row = {k: v for k, v in meta.items() if k != "stats"}
            for feat, st in meta["stats"].items():
                for name, val in st.items():
                    row[f"stats/{feat}/{name}"] = np.asarray(val).tolist()
            rows.append(row)
        path = self.tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
        stats = {k: {n: np.asarray(v).tolist() for n, v in aggregate_stats(
            [m["stats"][k] for m in self.episodes], [m["length"] for m in self.episodes]).items()}
            for k in self.features}
        (self.tmp / STATS_PATH).write_text(json.dumps(stats, indent=4))
        features = json.loads(json.dumps(self.features))
        for k in self.video_keys:
            features[k]["info"] = probe_video(self.tmp / VIDEO_PATH.format(video_key=k, chunk_index=0, file_index=0))
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self.episodes), "total_frames": self.total_frames, "total_tasks": len(self.tasks),
            "chunks_size": self.chunks_size, "data_files_size_in_mb": self.data_files_size_in_mb,
            "video_files_size_in_mb": self.video_files_size_in_mb, "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video_keys else None, "features": features,
        }
        # info.json last: its presence marks a complete dataset even inside the tmp directory
        (self.tmp / INFO_PATH).write_text(json.dumps(info, indent=4))

    def _publish(self) -> None:
        old = None
        if self.root.exists():
            if not self.overwrite:
                raise DatasetError(f"{self.root}: appeared while writing; refusing to replace it")
            old = self.root.parent / f".{self.root.name}.old-{os.getpid()}"
            os.replace(self.root, old)
        os.replace(self.tmp, self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far (the temporary directory)."""
        # No encoder flush: the frames are discarded anyway, and flushing an encoder after a failure
        # can block (seen with libsvtav1 after an exception mid-collection).
        for app in self._videos.values():
            app.discard()
        self._videos.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None or not self._finalized:
            self.abort()

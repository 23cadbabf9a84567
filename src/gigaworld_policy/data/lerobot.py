"""LeRobot v3.0 datasets on local disk: layout constants and a reader.

Layout (as lerobot 0.4 writes it; checked against lerobot's datasets/utils.py):

  meta/info.json        codebase_version "v3.0", robot_type, fps, features, totals, chunks_size,
                        data_files_size_in_mb, video_files_size_in_mb, splits, data_path, video_path
  meta/stats.json       per feature: mean, std, min, max, count, q01, q10, q50, q90, q99
  meta/tasks.parquet    index = task string, column task_index
  meta/episodes/chunk-XXX/file-XXX.parquet
                        episode_index, tasks, length, data/chunk_index, data/file_index,
                        dataset_from_index, dataset_to_index, videos/<key>/{chunk_index, file_index,
                        from_timestamp, to_timestamp}, meta/episodes/{chunk_index, file_index},
                        stats/<feature>/<stat>
  data/chunk-XXX/file-XXX.parquet
                        one column per non-video feature (vectors as fixed-size lists, images as
                        struct{bytes: PNG, path}), plus timestamp, frame_index, episode_index, index,
                        task_index
  videos/<key>/chunk-XXX/file-XXX.mp4
                        several episodes back to back; frame i of an episode at from_timestamp + timestamp

Dims: n frames, d feature width, H/W image height/width.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from gigaworld_policy.data.errors import DatasetError
from gigaworld_policy.data.video import FrameCache, VideoReader

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
# not part of LeRobot v3.0 (its loaders ignore it): how the dataset was made, e.g. by `gwp collect`
PROVENANCE_PATH = "meta/provenance.json"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
# info.json keys lerobot 0.4's LeRobotDatasetMetadata reads (tests check our writer emits all of them)
REQUIRED_INFO_KEYS = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
                      "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
                      "data_path", "video_path", "features")
IMAGE_DTYPES = ("image", "video")


def load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON ({e})") from e


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not Path(path).is_file():
        raise DatasetError(f"{path}: parquet file is missing")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: cannot read parquet ({e})") from e


def column_to_numpy(col: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], *, where: str) -> np.ndarray:
    """Arrow column -> numpy [n, *shape] (scalars of shape (1,) -> [n]); vectors may be (fixed) lists."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        flat = arr.flatten()
        while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
            flat = flat.flatten()
        values = flat.to_numpy(zero_copy_only=False)
        width = int(np.prod(shape))
        if values.size != n * width:
            raise DatasetError(f"{where}: expected {width} values per row (shape {list(shape)}), "
                               f"got {values.size} values in {n} rows")
        return values.reshape(n, *shape)
    if int(np.prod(shape)) != 1:
        raise DatasetError(f"{where}: expected a list column of shape {list(shape)}, got scalar type {arr.type}")
    return arr.to_numpy(zero_copy_only=False)


def decode_png(cell: dict | None, *, where: str) -> np.ndarray:
    if not cell or cell.get("bytes") is None:
        raise DatasetError(f"{where}: image cell has no bytes")
    try:
        with Image.open(io.BytesIO(cell["bytes"])) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise DatasetError(f"{where}: cannot decode image ({e})") from e


class _DataFile:
    """One data parquet file loaded into numpy (numeric features) and arrow (image structs)."""

    def __init__(self, path: Path, features: dict[str, dict]) -> None:
        table = read_parquet(path)
        self.path = path
        self.numeric: dict[str, np.ndarray] = {}
        self.images: dict[str, pa.Array] = {}
        for key, ft in features.items():
            if ft["dtype"] == "video":
                continue
            if key not in table.column_names:
                raise DatasetError(f"{path}: column {key!r} declared in meta/info.json features is missing "
                                   f"(columns: {table.column_names})")
            if ft["dtype"] == "image":
                self.images[key] = table.column(key).combine_chunks()
            else:
                self.numeric[key] = column_to_numpy(table.column(key), tuple(ft["shape"]),
                                                    where=f"{path}: feature {key!r}")
        index = self.numeric["index"].astype(np.int64)
        self.first_index = int(index[0]) if len(index) else 0
        self.contiguous = bool(len(index) == 0 or np.array_equal(index, np.arange(index[0], index[0] + len(index))))
        self.index = index
        self._check_finite(features)

    def _check_finite(self, features: dict[str, dict]) -> None:
        for key, x in self.numeric.items():
            if not np.issubdtype(x.dtype, np.floating):
                continue
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise DatasetError(f"{self.path}: feature {key!r} has NaN/inf at episode "
                                   f"{int(self.numeric['episode_index'][r])}, frame "
                                   f"{int(self.numeric['frame_index'][r])} ({int(bad.sum())} bad rows)")

    def rows(self, global_indices: np.ndarray) -> np.ndarray:
        if self.contiguous:
            r = global_indices - self.first_index
            ok = (r >= 0) & (r < len(self.index))
        else:
            r = np.searchsorted(self.index, global_indices)
            ok = (r < len(self.index)) & (self.index[np.minimum(r, len(self.index) - 1)] == global_indices)
        if not ok.all():
            missing = global_indices[~ok][:5].tolist()
            raise DatasetError(f"{self.path}: rows with index {missing} are missing (meta/episodes says they "
                               f"are in this file)")
        return r


class LeRobotDataset:
    """Read-only access to a local LeRobot v3.0 dataset.

    ``ds[i]`` is frame i in dataset order (column ``index``); :meth:`get_frames` returns a range of one
    episode with each video segment decoded once. Data files are loaded lazily and kept in a small LRU;
    decoded frames go to a byte-bounded LRU (``cache_bytes``). Picklable before and after use (open
    files are dropped), so it can be handed to DataLoader workers.
    """

    def __init__(self, root: str | Path, *, cache_bytes: int = 256 << 20, max_data_files: int = 4) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset directory does not exist")
        self.info: dict[str, Any] = load_json(self.root / INFO_PATH)
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{self.root / INFO_PATH}: codebase_version is {version!r}; only "
                               f"{CODEBASE_VERSION!r} is supported")
        for key in ("fps", "features", "data_path", "total_frames", "total_episodes"):
            if key not in self.info:
                raise DatasetError(f"{self.root / INFO_PATH}: missing key {key!r}")
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.fps = float(self.info["fps"])
        self.robot_type: str | None = self.info.get("robot_type")
        self.stats: dict[str, Any] | None = (load_json(self.root / STATS_PATH)
                                             if (self.root / STATS_PATH).is_file() else None)
        # how the dataset was made (writer's ``finalize(provenance=...)``); None for datasets from elsewhere
        self.provenance: dict[str, Any] | None = (load_json(self.root / PROVENANCE_PATH)
                                                  if (self.root / PROVENANCE_PATH).is_file() else None)
        self.tasks = self._load_tasks()
        self._load_episodes()
        self.max_data_files = max_data_files
        self._data: OrderedDict[Path, _DataFile] = OrderedDict()
        self._videos: dict[Path, VideoReader] = {}
        self._checked_videos: set[Path] = set()
        self.cache = FrameCache(cache_bytes)

    # -- metadata ---------------------------------------------------------------------------
    def _load_tasks(self) -> list[str]:
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise DatasetError(f"{path}: file is missing")
        df = pd.read_parquet(path)
        if "task_index" not in df.columns:
            raise DatasetError(f"{path}: column 'task_index' is missing")
        tasks = {int(i): str(t) for t, i in zip(df.index, df["task_index"])}
        return [tasks[i] if i in tasks else "" for i in range(max(tasks, default=-1) + 1)]

    def _load_episodes(self) -> None:
        paths = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not paths:
            raise DatasetError(f"{self.root / 'meta' / 'episodes'}: no episode metadata files")
        frames = []
        for p in paths:
            t = read_parquet(p)
            cols = [c for c in t.column_names if not c.startswith("stats/")]
            frames.append(t.select(cols).to_pandas())
        ep = pd.concat(frames, ignore_index=True).sort_values("episode_index").reset_index(drop=True)
        need = ["episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
                "data/file_index"]
        need += [f"videos/{k}/{f}" for k in self.video_keys
                 for f in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        for c in need:
            if c not in ep.columns:
                raise DatasetError(f"{paths[0].parent.parent}: episode metadata column {c!r} is missing")
        self.episodes = ep
        self._ep_from = ep["dataset_from_index"].to_numpy(np.int64)
        self._ep_to = ep["dataset_to_index"].to_numpy(np.int64)
        self._ep_pos = {int(e): i for i, e in enumerate(ep["episode_index"])}
        total = int(self.info["total_frames"])
        if int((self._ep_to - self._ep_from).sum()) != total or len(ep) != int(self.info["total_episodes"]):
            raise DatasetError(f"{self.root / INFO_PATH}: total_frames={total}, total_episodes="
                               f"{self.info['total_episodes']} disagree with meta/episodes ({len(ep)} episodes, "
                               f"{int((self._ep_to - self._ep_from).sum())} frames)")

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] == "video"]

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] in IMAGE_DTYPES]

    @property
    def episode_indices(self) -> list[int]:
        return [int(e) for e in self.episodes["episode_index"]]

    def __len__(self) -> int:
        return int(self.info["total_frames"])

    def episode_length(self, episode: int) -> int:
        p = self._pos(episode)
        return int(self._ep_to[p] - self._ep_from[p])

    def episode_start(self, episode: int) -> int:
        """Dataset index of the episode's first frame."""
        return int(self._ep_from[self._pos(episode)])

    def locate(self, index: int) -> tuple[int, int]:
        """Dataset index -> (episode_index, frame_index within the episode)."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.root}: frame index {index} out of range [0, {len(self)})")
        p = int(np.searchsorted(self._ep_from, index, side="right")) - 1
        return int(self.episodes["episode_index"].iat[p]), int(index - self._ep_from[p])

    def _pos(self, episode: int) -> int:
        try:
            return self._ep_pos[int(episode)]
        except KeyError:
            raise DatasetError(f"{self.root}: episode {episode} does not exist "
                               f"(episodes: {self.num_episodes})") from None

    # -- pickling (DataLoader workers) --------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = OrderedDict()
        state["_videos"] = {}
        state["cache"] = FrameCache(self.cache.max_bytes)
        return state

    def close(self) -> None:
        for r in self._videos.values():
            r.close()
        self._videos.clear()
        self._data.clear()

    # -- numeric data -----------------------------------------------------------------------
    def _data_file(self, episode: int) -> _DataFile:
        row = self.episodes.iloc[self._pos(episode)]
        path = self.root / self.info["data_path"].format(chunk_index=int(row["data/chunk_index"]),
                                                         file_index=int(row["data/file_index"]))
        df = self._data.get(path)
        if df is None:
            df = _DataFile(path, self.features)
            self._data[path] = df
            while len(self._data) > self.max_data_files:
                self._data.popitem(last=False)
        else:
            self._data.move_to_end(path)
        return df

    def _rows(self, episode: int, frames: np.ndarray) -> tuple[_DataFile, np.ndarray]:
        n = self.episode_length(episode)
        frames = np.asarray(frames, dtype=np.int64)
        if frames.size and (frames.min() < 0 or frames.max() >= n):
            raise IndexError(f"{self.root}: episode {episode} has {n} frames; asked for {frames.tolist()[:8]}")
        df = self._data_file(episode)
        return df, df.rows(self.episode_start(episode) + frames)

    def get_numeric(self, episode: int, key: str, frames: np.ndarray) -> np.ndarray:
        """Values of a numeric feature at the given frame indices of one episode: [len(frames), *shape]."""
        df, rows = self._rows(episode, frames)
        if key not in df.numeric:
            raise DatasetError(f"{df.path}: no numeric feature {key!r} (have {sorted(df.numeric)})")
        return df.numeric[key][rows]

    def episode_numeric(self, episode: int, key: str) -> np.ndarray:
        return self.get_numeric(episode, key, np.arange(self.episode_length(episode)))

    # -- images -----------------------------------------------------------------------------
    def get_images(self, episode: int, key: str, frames: np.ndarray | list[int]) -> list[np.ndarray]:
        """uint8 [H, W, 3] frames of camera feature ``key``; a video span is decoded once per call."""
        if key not in self.features or self.features[key]["dtype"] not in IMAGE_DTYPES:
            raise DatasetError(f"{self.root}: camera feature {key!r} not in dataset "
                               f"(cameras: {self.camera_keys})")
        frames = [int(f) for f in frames]
        out: dict[int, np.ndarray] = {}
        todo = []
        for f in frames:
            hit = self.cache.get((key, episode, f))
            if hit is None:
                todo.append(f)
            else:
                out[f] = hit
        if todo:
            decoded = (self._decode_video(episode, key, todo) if self.features[key]["dtype"] == "video"
                       else self._decode_images(episode, key, todo))
            for f, img in zip(todo, decoded):
                self.cache.put((key, episode, f), img)
                out[f] = img
        return [out[f] for f in frames]

    def _decode_images(self, episode: int, key: str, frames: list[int]) -> list[np.ndarray]:
        df, rows = self._rows(episode, np.asarray(frames))
        col = df.images[key]
        return [decode_png(col[int(r)].as_py(), where=f"{df.path}: episode {episode}, frame {f}, feature {key!r}")
                for r, f in zip(rows, frames)]

    def video_path(self, episode: int, key: str) -> Path:
        row = self.episodes.iloc[self._pos(episode)]
        return self.root / self.info["video_path"].format(
            video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]))

    def _decode_video(self, episode: int, key: str, frames: list[int]) -> list[np.ndarray]:
        path = self.video_path(episode, key)
        reader = self._videos.get(path)
        if reader is None:
            reader = self._videos[path] = VideoReader(path)
        row = self.episodes.iloc[self._pos(episode)]
        ts = self.get_numeric(episode, "timestamp", np.asarray(frames)).astype(np.float64)
        t0 = float(row[f"videos/{key}/from_timestamp"])
        where = f" (episode {episode}, feature {key!r})"
        self._check_video_length(path, key, reader, (int(row[f"videos/{key}/chunk_index"]),
                                                     int(row[f"videos/{key}/file_index"])))
        imgs = reader.decode([t0 + float(t) for t in ts], self.fps, what=where)
        shape = tuple(self.features[key]["shape"])
        for img in imgs:
            if img.shape != shape:
                raise DatasetError(f"{path}: decoded frame shape {img.shape} != {shape} declared in "
                                   f"meta/info.json{where}")
        return imgs

    def _check_video_length(self, path: Path, key: str, reader: VideoReader, chunk_file: tuple[int, int]) -> None:
        """On first use of a video file: its duration must cover every episode stored in it."""
        if path in self._checked_videos:
            return
        c = reader._open()
        s = c.streams.video[0]
        if s.duration is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / 1e6
        else:
            duration = float("inf")
        ep = self.episodes
        in_file = ep[(ep[f"videos/{key}/chunk_index"] == chunk_file[0])
                     & (ep[f"videos/{key}/file_index"] == chunk_file[1])]
        for _, row in in_file.iterrows():
            end = float(row[f"videos/{key}/from_timestamp"]) + int(row["length"]) / self.fps
            if duration + 0.5 / self.fps < end:
                raise DatasetError(f"{path}: video is {duration:.3f}s long but episode "
                                   f"{int(row['episode_index'])} ({int(row['length'])} frames, feature {key!r}) "
                                   f"needs it to reach {end:.3f}s; the video is shorter than its frames")
        self._checked_videos.add(path)

    # -- frames -----------------------------------------------------------------------------
    def task_of(self, episode: int, frame: int) -> str:
        ti = int(self.get_numeric(episode, "task_index", np.asarray([frame]))[0])
        if not 0 <= ti < len(self.tasks):
            raise DatasetError(f"{self.root}: episode {episode} frame {frame} has task_index {ti} not in "
                               f"{TASKS_PATH}")
        return self.tasks[ti]

    def get_frames(self, episode: int, start: int, stop: int, keys: list[str] | None = None) -> dict[str, Any]:
        """Frames [start, stop) of one episode: numeric features stacked [n, ...], images as uint8
        [n, H, W, 3], ``task`` as a list of strings."""
        frames = np.arange(start, stop)
        keys = list(self.features) if keys is None else keys
        out: dict[str, Any] = {}
        for k in keys:
            if self.features[k]["dtype"] in IMAGE_DTYPES:
                out[k] = np.stack(self.get_images(episode, k, frames))
            else:
                out[k] = self.get_numeric(episode, k, frames)
        out["task"] = [self.tasks[int(t)] for t in self.get_numeric(episode, "task_index", frames)]
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        episode, frame = self.locate(int(index))
        item = self.get_frames(episode, frame, frame + 1)
        out: dict[str, Any] = {}
        for k, v in item.items():
            if k == "task":
                out[k] = v[0]
            else:
                x = v[0]
                out[k] = x.astype(np.float32) if self.features[k]["dtype"] == "float32" else x
        return out

    def __repr__(self) -> str:
        return (f"LeRobotDataset({str(self.root)!r}, robot_type={self.robot_type!r}, episodes={self.num_episodes}, "
                f"frames={len(self)}, fps={self.fps:g}, cameras={self.camera_keys})")


def open_dataset(root: str | Path, **kwargs: Any) -> LeRobotDataset:
    """Open a local LeRobot v3.0 dataset (see :class:`LeRobotDataset`)."""
    return LeRobotDataset(root, **kwargs)

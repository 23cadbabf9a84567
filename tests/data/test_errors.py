"""Bad input raises DatasetError naming the file, episode and feature; never black frames or zeros."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_dataset
from gigaworld_policy.config import Config, DataConfig, ModelConfig
from gigaworld_policy.data import DatasetError, StatsMismatchError, WindowedDataset, open_dataset
from gigaworld_policy.data.stats import compute_norm_stats, load_stats, save_stats
from gigaworld_policy.data.video import VideoAppender

MODEL = ModelConfig(state_dim=16, action_dim=16, num_embodiments=3)
VIDEO = "videos/observation.images.cam_high/chunk-000/file-000.mp4"
DATA = "data/chunk-000/file-000.parquet"


@pytest.fixture
def ds_copy(tmp_path: Path, dataset_root: Path) -> Path:
    return Path(shutil.copytree(dataset_root, tmp_path / "copy"))


def test_missing_video(ds_copy: Path) -> None:
    (ds_copy / VIDEO).unlink()
    ds = open_dataset(ds_copy)
    with pytest.raises(DatasetError, match=r"file-000\.mp4: video file is missing"):
        ds[0]


def test_truncated_video(ds_copy: Path) -> None:
    data = (ds_copy / VIDEO).read_bytes()
    (ds_copy / VIDEO).write_bytes(data[: len(data) // 3])
    ds = open_dataset(ds_copy)
    with pytest.raises(DatasetError, match=r"file-000\.mp4"):
        for i in range(len(ds)):
            ds[i]


def test_video_shorter_than_episode(ds_copy: Path) -> None:
    (ds_copy / VIDEO).unlink()
    app = VideoAppender(ds_copy / VIDEO, 10, 32, 32, "libx264")
    app.append(np.zeros((15, 32, 32, 3), np.uint8))  # the file needs 28 frames
    app.close()
    ds = open_dataset(ds_copy)
    with pytest.raises(DatasetError, match=r"file-000\.mp4: video is 1\.500s long but episode 1 .*"
                                           r"observation\.images\.cam_high.*shorter than its frames"):
        ds[0]


def test_parquet_not_matching_info(ds_copy: Path) -> None:
    t = pq.read_table(ds_copy / DATA).drop_columns(["action"])
    pq.write_table(t, ds_copy / DATA)
    with pytest.raises(DatasetError, match=r"file-000\.parquet: column 'action' declared in meta/info\.json"):
        open_dataset(ds_copy)[0]


def test_parquet_wrong_width(ds_copy: Path) -> None:
    info = json.loads((ds_copy / "meta/info.json").read_text())
    info["features"]["action"]["shape"] = [7]
    (ds_copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"file-000\.parquet: feature 'action': expected 7 values per row"):
        open_dataset(ds_copy)[0]


def test_nan_in_state(ds_copy: Path) -> None:
    t = pq.read_table(ds_copy / DATA)
    state = np.stack(t.column("observation.state").to_numpy(zero_copy_only=False))
    state[12, 3] = np.inf  # episode 1, frame 3
    col = pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1).astype(np.float32)), 14)
    t = t.set_column(t.column_names.index("observation.state"), "observation.state", col)
    pq.write_table(t, ds_copy / DATA)
    with pytest.raises(DatasetError, match=r"file-000\.parquet: feature 'observation\.state' has NaN/inf at "
                                           r"episode 1, frame 3"):
        open_dataset(ds_copy)[0]


def test_missing_camera(dataset_root: Path) -> None:
    cfg = Config(model=MODEL, data=DataConfig(cameras=("cam_high", "cam_low")))
    with pytest.raises(DatasetError, match=r"camera\(s\) \['cam_low'\] named in data\.cameras are not in the "
                                           r"dataset"):
        WindowedDataset([dataset_root], cfg)


def test_stats_from_another_dataset(tmp_path: Path, dataset_root: Path) -> None:
    other = write_dataset(tmp_path / "other", lengths=(3, 3))
    path = save_stats(compute_norm_stats(open_dataset(other), 8), tmp_path / "other_stats.json")
    with pytest.raises(StatsMismatchError, match=r"other_stats\.json: statistics were computed for another "
                                                 r"dataset"):
        load_stats(path, open_dataset(dataset_root))
    with pytest.raises(StatsMismatchError, match="action_horizon=8"):
        load_stats(path, open_dataset(other), action_horizon=16)
    from gigaworld_policy.data import DataSource
    with pytest.raises(StatsMismatchError, match="another dataset"):
        WindowedDataset([DataSource(dataset_root, stats_path=path)], Config(model=MODEL))

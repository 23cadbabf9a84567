from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import CAMERAS, LENGTHS, action_value, image_value, state_value, write_dataset
from gigaworld_policy.data import DatasetError, LeRobotWriter, open_dataset
from gigaworld_policy.data.lerobot import REQUIRED_INFO_KEYS

# Codec tolerance: AV1 (CRF 30) / H.264 on 32x32 smooth pictures; mean abs error per pixel (0..255).
MEAN_ABS_TOL = 4.0


def test_round_trip_values_and_images(dataset_root: Path) -> None:
    ds = open_dataset(dataset_root)
    assert len(ds) == sum(LENGTHS) and ds.num_episodes == 3 and ds.fps == 10 and ds.robot_type == "aloha"
    i = 0
    for ep, n in enumerate(LENGTHS):
        for f in range(n):
            x = ds[i]
            np.testing.assert_array_equal(x["observation.state"], state_value(ep, f))
            np.testing.assert_array_equal(x["action"], action_value(ep, f))
            assert x["observation.state"].dtype == np.float32
            assert (x["episode_index"], x["frame_index"], x["index"]) == (ep, f, i)
            assert x["timestamp"] == pytest.approx(f / 10)
            assert x["task"] == f"task {ep % 2}"
            for c, cam in enumerate(CAMERAS):
                img = x[f"observation.images.{cam}"]
                assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
                err = np.abs(img.astype(float) - image_value(ep, f, c)).mean()
                assert err < MEAN_ABS_TOL, (ep, f, cam, err)
            i += 1


def test_get_frames_matches_single_frames(dataset_root: Path) -> None:
    ds = open_dataset(dataset_root, cache_bytes=0)
    batch = ds.get_frames(1, 3, 11)
    assert batch["observation.images.cam_high"].shape == (8, 32, 32, 3)
    ds2 = open_dataset(dataset_root)
    for j, f in enumerate(range(3, 11)):
        x = ds2[ds2.episode_start(1) + f]
        np.testing.assert_array_equal(batch["observation.state"][j], x["observation.state"])
        np.testing.assert_array_equal(batch["observation.images.cam_high"][j], x["observation.images.cam_high"])


def test_frame_cache_is_bounded_and_used(dataset_root: Path) -> None:
    ds = open_dataset(dataset_root, cache_bytes=10 * 32 * 32 * 3)
    ds.get_images(1, "observation.images.cam_high", range(14))
    assert len(ds.cache) == 10
    before = ds.cache.hits
    ds.get_images(1, "observation.images.cam_high", [13])
    assert ds.cache.hits == before + 1


def test_pickle_after_use(dataset_root: Path) -> None:
    ds = open_dataset(dataset_root)
    _ = ds[3]
    ds2 = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(ds2[3]["observation.images.cam_high"], ds[3]["observation.images.cam_high"])


def test_metadata_matches_lerobot_v30(dataset_root: Path) -> None:
    info = json.loads((dataset_root / "meta/info.json").read_text())
    for key in REQUIRED_INFO_KEYS:
        assert key in info, key
    assert info["codebase_version"] == "v3.0"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:3"} and info["total_tasks"] == 2
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert info["features"][k]["shape"] == [1]
    vinfo = info["features"]["observation.images.cam_high"]["info"]
    assert vinfo["video.pix_fmt"] == "yuv420p" and vinfo["video.height"] == 32
    tasks = pd.read_parquet(dataset_root / "meta/tasks.parquet")
    assert tasks.loc["task 1", "task_index"] == 1
    ep = pq.read_table(dataset_root / "meta/episodes/chunk-000/file-000.parquet").to_pandas()
    for col in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                "dataset_to_index", "videos/observation.images.cam_high/from_timestamp",
                "videos/observation.images.cam_high/to_timestamp", "meta/episodes/chunk_index",
                "stats/observation.state/mean", "stats/action/q99"):
        assert col in ep.columns, col
    assert ep["videos/observation.images.cam_high/from_timestamp"].tolist() == [0.0, 0.9, 2.3]
    stats = json.loads((dataset_root / "meta/stats.json").read_text())
    assert set(stats["action"]) >= {"mean", "std", "min", "max", "count", "q01", "q10", "q50", "q90", "q99"}
    assert stats["action"]["count"] == [sum(LENGTHS)]
    np.testing.assert_allclose(stats["observation.state"]["max"], state_value(2, 4), rtol=1e-6)
    data = pq.read_table(dataset_root / "data/chunk-000/file-000.parquet")
    assert data.column_names[:2] == ["observation.state", "action"]
    assert data.schema.field("observation.state").type.list_size == 14


@pytest.mark.parametrize("codec, name, pix_fmt", [(None, "h264", "yuv420p"), ("libsvtav1", "av1", "yuv420p"),
                                                  ("libx264rgb", "h264", "gbrp")], ids=["default", "av1", "lossless"])
def test_video_codecs_round_trip(tmp_path: Path, codec: str | None, name: str, pix_fmt: str) -> None:
    """H.264 by default (data/video.py pick_video_codec says why), AV1 on request, both within the codec
    tolerance; lossless RGB H.264 on request decodes bit-exact. info.json records codec and pixel format."""
    has_sched = hasattr(os, "sched_getscheduler")  # Linux; macOS has no per-thread policy API in os
    sched = (os.sched_getscheduler(0), os.sched_getparam(0)) if has_sched else None
    root = write_dataset(tmp_path / "ds", lengths=(6, 4), cameras=("cam_high",), codec=codec)
    # SVT-AV1 run as root makes the encoding thread SCHED_FIFO 99; the writer puts it back (data/video.py)
    assert not has_sched or (os.sched_getscheduler(0), os.sched_getparam(0)) == sched
    info = json.loads((root / "meta/info.json").read_text())["features"]["observation.images.cam_high"]["info"]
    assert (info["video.codec"], info["video.pix_fmt"]) == (name, pix_fmt)
    ds = open_dataset(root)
    for i, (ep, f) in enumerate([(0, k) for k in range(6)] + [(1, k) for k in range(4)]):
        got = ds[i]["observation.images.cam_high"]
        if codec == "libx264rgb":
            np.testing.assert_array_equal(got, image_value(ep, f, 0), err_msg=f"frame {i}")
        else:
            err = np.abs(got.astype(float) - image_value(ep, f, 0)).mean()
            assert err < MEAN_ABS_TOL, (codec, i, err)
    with pytest.raises(DatasetError, match=r"video codec 'mpeg2video'.*libx264, libsvtav1"):
        write_dataset(tmp_path / "bad", lengths=(2,), cameras=("cam_high",), codec="mpeg2video")


def test_image_features_in_parquet(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "img", image_dtype="image", lengths=(3, 4))
    ds = open_dataset(root)
    col = pq.read_table(root / "data/chunk-000/file-000.parquet").column("observation.images.cam_high")
    assert col.type.names == ["bytes", "path"]
    np.testing.assert_array_equal(ds[4]["observation.images.cam_left_wrist"], image_value(1, 1, 1))  # PNG: exact


def test_several_files_roll_over(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "multi", lengths=(6, 7, 8, 5), video_files_size_in_mb=1e-6,
                         data_files_size_in_mb=1e-6, chunks_size=2)
    assert (root / "data/chunk-001/file-001.parquet").is_file()
    assert (root / "videos/observation.images.cam_high/chunk-001/file-001.mp4").is_file()
    ds = open_dataset(root)
    x = ds[6 + 7 + 3]
    np.testing.assert_array_equal(x["action"], action_value(2, 3))
    assert np.abs(x["observation.images.cam_right_wrist"].astype(float) - image_value(2, 3, 2)).mean() < MEAN_ABS_TOL


def test_atomic_finalize_and_abort(tmp_path: Path) -> None:
    root = tmp_path / "atomic"
    feats = {"observation.state": {"dtype": "float32", "shape": [2], "names": None},
             "action": {"dtype": "float32", "shape": [2], "names": None}}
    w = LeRobotWriter(root, fps=10, robot_type="x", features=feats)
    w.add_frame({"observation.state": np.zeros(2), "action": np.ones(2)}, task="t")
    w.save_episode()
    assert not root.exists()  # nothing at root until finalize
    w.abort()
    assert not root.exists() and not list(tmp_path.iterdir())
    with LeRobotWriter(root, fps=10, robot_type="x", features=feats) as w2:
        w2.add_frame({"observation.state": np.zeros(2), "action": np.ones(2)}, task="t")
        w2.save_episode()
        w2.add_frame({"observation.state": np.zeros(2), "action": np.ones(2)}, task="t")
        w2.discard_episode()
        w2.finalize()
    assert len(open_dataset(root)) == 1
    assert open_dataset(root).provenance is None  # no meta/provenance.json unless the writer is given one
    with pytest.raises(DatasetError, match="already exists"):
        LeRobotWriter(root, fps=10, robot_type="x", features=feats)


def test_provenance_is_written_beside_lerobot_meta(tmp_path: Path) -> None:
    root = tmp_path / "prov"
    feats = {"action": {"dtype": "float32", "shape": [2], "names": None}}
    w = LeRobotWriter(root, fps=10, robot_type="x", features=feats)
    w.add_frame({"action": np.ones(2)}, task="t")
    w.save_episode()
    with pytest.raises(DatasetError, match="provenance is not JSON-serialisable"):
        w.finalize(provenance={"action_noise": float("nan")})
    assert not root.exists()  # nothing published, and the writer can still finish
    w.finalize(provenance={"collector": "test", "seeds": [3, 5]})
    assert open_dataset(root).provenance == {"collector": "test", "seeds": [3, 5]}
    assert json.loads((root / "meta/info.json").read_text())["total_frames"] == 1


def test_writer_rejects_bad_frames(tmp_path: Path) -> None:
    feats = {"action": {"dtype": "float32", "shape": [2], "names": None},
             "observation.images.top": {"dtype": "video", "shape": [8, 8, 3], "names": None}}
    w = LeRobotWriter(tmp_path / "bad", fps=10, robot_type="x", features=feats)
    with pytest.raises(DatasetError, match=r"'action' has NaN/inf at episode 0, frame 0"):
        w.add_frame({"action": np.array([np.nan, 0]), "observation.images.top": np.zeros((8, 8, 3), np.uint8)}, "t")
    with pytest.raises(DatasetError, match=r"observation\.images\.top"):
        w.add_frame({"action": np.zeros(2), "observation.images.top": np.zeros((8, 8, 3), np.float32)}, "t")
    w.abort()

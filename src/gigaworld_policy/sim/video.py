"""mp4 writing for evaluation rollouts (PyAV, H.264 when available)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _codec() -> str:
    import av

    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # codec not compiled into this PyAV build
            continue
    raise RuntimeError("no mp4 video encoder (libx264/h264/mpeg4) in this PyAV build")


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: float) -> Path:
    """Write uint8 [H, W, 3] frames (even H, W are padded if needed) to an mp4 file."""
    import av

    path = Path(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(_codec(), rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        for f in frames:
            if f.shape[:2] != (ph, pw):
                f = np.pad(f, ((0, ph - f.shape[0]), (0, pw - f.shape[1]), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def side_by_side(left: np.ndarray, right: np.ndarray | None) -> np.ndarray:
    """Concatenate two frames horizontally, resizing ``right`` to ``left``'s height (nearest neighbour)."""
    if right is None:
        right = np.zeros_like(left)
    h = left.shape[0]
    if right.shape[0] != h:
        rows = np.arange(h) * right.shape[0] // h
        cols = np.arange(right.shape[1] * h // right.shape[0]) * right.shape[0] // h
        right = right[rows][:, cols]
    return np.concatenate([left, right.astype(np.uint8)], axis=1)

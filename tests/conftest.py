import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

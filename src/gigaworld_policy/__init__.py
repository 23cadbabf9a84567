"""GigaWorld-Policy: an action-centered world-action model for robot learning.

``gigaworld_policy.Policy`` (checkpoint -> ``infer(obs)``) loads lazily: importing the package stays cheap
and torch-free.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Policy", "PolicyInputError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Policy", "PolicyInputError"):
        from gigaworld_policy import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'gigaworld_policy' has no attribute {name!r}")

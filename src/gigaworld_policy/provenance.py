"""Where a number came from: the git commit of the code that produced it (reports and benchmarks)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str | None:
    """Short commit hash of the checkout this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None

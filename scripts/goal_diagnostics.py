"""Diagnostics, not study rows: `gwp demo` with the Meta-World goal made easier to get.

Why: reach and push fail in every image-only variant tried (docs/results.md), and the trained policy is
goal-blind. Each variant removes one obstacle between the goal and the action:

  (goal-state, the goal position appended to the proprio state, was a variant here; it is now the env
  ``metaworld-goal``: `gwp demo --env metaworld-goal ...`, sim/metaworld_env.py)
  big-goal     the goal marker (a site: drawn, never collides) rendered with 3x its radius (2 cm -> 6 cm,
               about 3 pixels across in the 64x64 corner2 view instead of 1). Success here means the
               marker's size in the image is what limits.
  early-frames each episode's first EARLY_FRAMES anchor frames enter the training pool EARLY_REPEAT times
               (on 25 reach demos: 26% of the sampled windows instead of 7%). Only those frames force reading the goal from the image
               (later, the hand's displacement from its fixed start gives the direction), and their action
               loss stays ~0.2 against ~0.005 for the rest. Fitting them here and still failing on fresh
               layouts means too few goals were seen, not too few steps on them.

    OMP_NUM_THREADS=1 python scripts/goal_diagnostics.py big-goal --out study/big_goal_reach \
        --tasks reach-v3 --max-steps 1000 --train-minutes 80 --eval-episodes 20

Arguments after the variant are those of `gwp demo`.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from gigaworld_policy.sim import metaworld_env

MARKER_SCALE = 3.0
EARLY_FRAMES, EARLY_REPEAT = 4, 5
_plain_init = metaworld_env.MetaWorldEnv.__init__


def _big_goal_init(self, *args, **kwargs) -> None:
    _plain_init(self, *args, **kwargs)
    self._env.model.site("goal").size[:] *= MARKER_SCALE


def use_big_goal() -> None:
    metaworld_env.MetaWorldEnv.__init__ = _big_goal_init


def use_early_frames() -> None:
    from gigaworld_policy.train import data as train_data
    from gigaworld_policy.train import trainer

    plain_split = train_data.split_episodes

    def split_with_early_frames(ds: Any, seed: int, holdout: int) -> Any:
        split = plain_split(ds, seed, holdout)
        pools, offset = [], 0
        for src, pool in zip(ds.sources, split.train_index):
            starts = {offset + src.ds.episode_start(e) for e in src.ds.episode_indices}
            early = np.asarray([i for i in pool if any(0 <= i - s0 < EARLY_FRAMES for s0 in starts)], np.int64)
            pools.append(np.concatenate([pool, *[early] * (EARLY_REPEAT - 1)]))
            offset += len(src.ds)
        return train_data.Split(split.source_weights, pools, split.heldout)

    trainer.split_episodes = split_with_early_frames


VARIANTS = {"big-goal": use_big_goal, "early-frames": use_early_frames}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(VARIANTS)}}} [gwp demo arguments]")
    VARIANTS[sys.argv[1]]()
    from gigaworld_policy.cli import main

    sys.exit(main(["demo", *sys.argv[2:]]))

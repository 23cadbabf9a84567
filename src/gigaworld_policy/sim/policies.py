"""The policy protocol of closed-loop evaluation and the built-in expert / random policies.

Anything with ``infer(obs) -> {"actions": float [T, A], ...}`` (obs per docs/CONTRACTS.md, actions in
absolute robot units) is a policy; ``reset()`` or ``reset(seed=...)`` (new episode; closed-loop evaluation
passes the episode seed to a hook that takes one) and ``bind_env(env)`` (new task env) are optional hooks. ``gigaworld_policy.policy.Policy`` (the trained model) follows the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from gigaworld_policy.sim.common import SimEnv, SimError


@runtime_checkable
class PolicyProtocol(Protocol):
    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...


class ExpertPolicy:
    """Scripted expert behind the policy protocol; reads privileged state from the bound env.

    Meta-World: one action per call from ``metaworld.policies``. ALOHA: at ``reset()`` it plans the
    episode with our end-effector expert (same seed, so the same layout) and then serves the joint
    trajectory from the env's current step, ``horizon`` steps at a time.
    """

    def __init__(self, horizon: int = 16) -> None:
        self.horizon = int(horizon)
        self.env: SimEnv | None = None
        self._mw: Any = None
        self._actions: np.ndarray | None = None

    def bind_env(self, env: SimEnv) -> None:
        self.env = env
        self._actions = None
        if env.env_name == "metaworld":
            from gigaworld_policy.sim.experts import MetaWorldExpert

            self._mw = MetaWorldExpert(env.task)

    def reset(self) -> None:
        env = self._env()
        if env.env_name == "aloha":
            from gigaworld_policy.sim.experts import aloha_expert_actions

            if env.seed is None:  # type: ignore[attr-defined]
                raise SimError("ExpertPolicy.reset: reset the env (with a seed) before the policy")
            self._actions = aloha_expert_actions(env.task, env.seed, max_steps=env.max_steps).actions  # type: ignore[attr-defined]

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        env = self._env()
        if env.env_name == "metaworld":
            return {"actions": self._mw.act(env.expert_state())[None]}  # type: ignore[attr-defined]
        if self._actions is None:
            self.reset()
        assert self._actions is not None
        t = env.steps  # type: ignore[attr-defined]
        chunk = self._actions[t:t + self.horizon]
        if len(chunk) == 0:
            chunk = self._actions[-1:]
        return {"actions": chunk.astype(np.float32)}

    def _env(self) -> SimEnv:
        if self.env is None:
            raise SimError("ExpertPolicy: bind_env(env) before use")
        return self.env


class RandomPolicy:
    """Uniform random actions within the env's exploration bounds, ``horizon`` steps per call."""

    def __init__(self, horizon: int = 8, seed: int = 0) -> None:
        self.horizon = int(horizon)
        self.rng = np.random.default_rng(seed)
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def bind_env(self, env: SimEnv) -> None:
        self.low, self.high = np.asarray(env.action_low), np.asarray(env.action_high)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        if self.low is None or self.high is None:
            raise SimError("RandomPolicy: bind_env(env) before use")
        a = self.rng.uniform(self.low, self.high, size=(self.horizon, len(self.low)))
        return {"actions": a.astype(np.float32)}

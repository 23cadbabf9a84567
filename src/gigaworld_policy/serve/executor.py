"""Action-chunk executor for the robot control loop (numpy + threading only; works with Policy or PolicyClient).

Call :meth:`ChunkExecutor.act` once per control step with the current observation; it returns the action
to apply now. Time is counted in control steps. A chunk queried with the observation of step ``s`` holds
the actions for steps ``s, s+1, ..., s+T-1``; the action for step ``t`` is ``chunk[t - s]`` whichever
chunk is used, so a chunk that arrives late is entered at the right offset.

* Receding horizon: a new chunk is requested every ``execute_steps`` (k) steps; without ensembling the
  newest chunk that is due is executed.
* Temporal ensembling (ACT, Zhao et al. 2023): every chunk covering step ``t`` votes with weight
  ``exp(-ensemble_coef * i)``, ``i = 0`` for the oldest chunk (ACT's choice: older predictions weigh more,
  which smooths the motion); chunks count from the step they become due.
* Prefetch: the request for the chunk due at step ``b`` is sent ``prefetch_steps`` steps early (at step
  ``b - prefetch_steps``, with that step's observation) from a background thread, so the loop keeps
  executing the current chunk meanwhile. If the new chunk is late at ``b`` the current chunk goes on while
  it still covers the step; only when nothing covers the step does the loop wait (counted as a stall).

Dims: t chunk length (T), a action dims.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

InferFn = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class _Chunk:
    start: int  # step of the observation it was predicted from: actions[i] is for step start + i
    due: int  # first step it may be executed at
    actions: np.ndarray  # [t, a]

    def covers(self, step: int) -> bool:
        return self.due <= step < self.start + len(self.actions)


@dataclass
class ExecutorStats:
    queries: int = 0
    stalls: int = 0  # steps at which the loop had to wait for a chunk after the first one
    stall_ms: float = 0.0
    chunk_switches: int = 0
    query_ms: list[float] = field(default_factory=list)


class ChunkExecutor:
    def __init__(self, policy: Any, *, execute_steps: int, ensemble_coef: float | None = None,
                 prefetch_steps: int = 0, infer_kwargs: dict[str, Any] | None = None) -> None:
        """``policy``: anything with ``infer(obs) -> {"actions": [t, a]}`` (or a callable doing that)."""
        if execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
        if prefetch_steps < 0:
            raise ValueError(f"prefetch_steps must be >= 0, got {prefetch_steps}")
        if ensemble_coef is not None and ensemble_coef < 0:
            raise ValueError(f"ensemble_coef must be >= 0, got {ensemble_coef}")
        self._infer: InferFn = policy if callable(policy) and not hasattr(policy, "infer") else policy.infer
        self._policy = policy
        self.execute_steps = int(execute_steps)
        self.ensemble_coef = ensemble_coef
        self.prefetch_steps = int(prefetch_steps)
        self.infer_kwargs = dict(infer_kwargs or {})
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gwp-prefetch")
        self.reset()

    def reset(self) -> None:
        """New episode: drop chunks (a request in flight is discarded) and restart the step count."""
        self.step = 0
        self._chunks: list[_Chunk] = []
        self._pending: tuple[concurrent.futures.Future[np.ndarray], int, int] | None = None
        self._next_due = 0  # step at which the next chunk becomes due
        self._current: _Chunk | None = None
        self.stats = ExecutorStats()
        if hasattr(self._policy, "reset"):
            self._policy.reset()

    # -- querying ----------------------------------------------------------------------------------
    def _query(self, obs: dict[str, Any]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self._infer(obs, **self.infer_kwargs) if self.infer_kwargs else self._infer(obs)
        actions = np.asarray(out["actions"], dtype=np.float32)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"policy output 'actions': expected [T, A] with T >= 1, got {list(actions.shape)}")
        self.stats.query_ms.append((time.perf_counter() - t0) * 1000.0)
        return actions

    def _add(self, actions: np.ndarray, start: int, due: int) -> None:
        if self.execute_steps > len(actions):
            raise ValueError(f"execute_steps={self.execute_steps} exceeds the chunk length {len(actions)}")
        if self.prefetch_steps + self.execute_steps > len(actions):  # the next chunk is due before this one ends
            raise ValueError(f"prefetch_steps={self.prefetch_steps} + execute_steps={self.execute_steps} exceed "
                             f"the chunk length {len(actions)}")
        self._chunks.append(_Chunk(start, due, actions))
        self.stats.queries += 1

    def _collect(self, wait: bool) -> None:
        if self._pending is None:
            return
        fut, start, due = self._pending
        if not wait and not fut.done():
            return
        if wait and not fut.done():
            t0 = time.perf_counter()
            concurrent.futures.wait([fut])
            self.stats.stalls += 1
            self.stats.stall_ms += (time.perf_counter() - t0) * 1000.0
        self._pending = None
        self._add(fut.result(), start, due)  # re-raises the policy's exception

    # -- the control step --------------------------------------------------------------------------
    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The action [a] for the current step; call once per control step."""
        t = self.step
        self._collect(wait=False)
        lead = self.prefetch_steps if self._chunks else 0  # nothing to execute meanwhile before the first chunk
        if self._pending is None and t >= self._next_due - lead:
            due = max(self._next_due, t)
            if lead > 0:
                self._pending = (self._pool.submit(self._query, obs), t, due)
            else:
                self._add(self._query(obs), t, due)
            self._next_due = due + self.execute_steps
        self._chunks = [c for c in self._chunks if c.start + len(c.actions) > t]
        while not any(c.covers(t) for c in self._chunks):
            if self._pending is None:
                raise RuntimeError(f"step {t}: no action chunk covers this step")  # unreachable by construction
            self._collect(wait=True)
        live = [c for c in self._chunks if c.covers(t)]
        if self.ensemble_coef is None:
            chunk = live[-1]
            if chunk is not self._current:
                self.stats.chunk_switches += 1
                self._current = chunk
            action = chunk.actions[t - chunk.start]
        else:
            w = np.exp(-self.ensemble_coef * np.arange(len(live)))  # oldest first (ACT)
            stacked = np.stack([c.actions[t - c.start] for c in live]).astype(np.float64)
            action = ((w[:, None] * stacked).sum(0) / w.sum()).astype(np.float32)
        self.step = t + 1
        return np.asarray(action, dtype=np.float32)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""ChunkExecutor with a fake policy whose action for step t is exactly t (any chunk, any offset)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from gigaworld_policy.serve.executor import ChunkExecutor

T = 8


class StepPolicy:
    """Chunk for an observation taken at step s: actions [s, s+1, ..., s+T-1] (+ optional bias per query)."""

    def __init__(self, latency_s: float = 0.0, gate: threading.Event | None = None, bias: bool = False) -> None:
        self.latency_s, self.gate, self.bias = latency_s, gate, bias
        self.queried_at: list[int] = []
        self.in_flight = threading.Event()

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        self.in_flight.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        time.sleep(self.latency_s)
        s = int(obs["step"])
        self.queried_at.append(s)
        b = 100.0 * len(self.queried_at) if self.bias else 0.0
        self.in_flight.clear()
        return {"actions": (np.arange(s, s + T, dtype=np.float32) + b)[:, None].repeat(2, 1)}


def run(ex: ChunkExecutor, steps: int, dt: float = 0.0) -> np.ndarray:
    out = []
    for t in range(steps):
        out.append(ex.act({"step": t}))
        if dt:
            time.sleep(dt)
    return np.stack(out)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_receding_horizon_queries_every_k_steps(k: int) -> None:
    pol = StepPolicy()
    ex = ChunkExecutor(pol, execute_steps=k)
    acts = run(ex, 20)
    np.testing.assert_array_equal(acts[:, 0], np.arange(20))
    assert pol.queried_at == list(range(0, 20, k))
    assert ex.stats.stalls == 0 and ex.stats.queries == len(pol.queried_at)


def test_receding_horizon_executes_first_k_of_each_chunk() -> None:
    pol = StepPolicy(bias=True)  # each chunk distinguishable: query q adds 100 * q
    ex = ChunkExecutor(pol, execute_steps=3)
    acts = run(ex, 9)[:, 0]
    np.testing.assert_array_equal(acts, np.arange(9) + 100 * (1 + np.arange(9) // 3))


def test_temporal_ensembling_weights_oldest_most() -> None:
    pol = StepPolicy(bias=True)
    m = 0.5
    ex = ChunkExecutor(pol, execute_steps=1, ensemble_coef=m)
    acts = run(ex, 12)[:, 0]
    for t in range(12):
        live = [q for q in range(t + 1) if t - q < T]  # chunk queried at step q has bias 100 * (q + 1)
        w = np.exp(-m * np.arange(len(live)))
        want = t + (w * 100.0 * (np.asarray(live) + 1)).sum() / w.sum()
        assert acts[t] == pytest.approx(want, rel=1e-5), t
    # without bias every chunk agrees: ensembling returns exactly t
    ex2 = ChunkExecutor(StepPolicy(), execute_steps=2, ensemble_coef=0.1)
    np.testing.assert_allclose(run(ex2, 15)[:, 0], np.arange(15), atol=1e-5)


def test_prefetch_keeps_the_loop_running_while_a_request_is_in_flight() -> None:
    gate = threading.Event()
    gate.set()
    pol = StepPolicy(gate=gate)
    ex = ChunkExecutor(pol, execute_steps=4, prefetch_steps=2)
    assert ex.act({"step": 0})[0] == 0  # first chunk: synchronous
    assert ex.act({"step": 1})[0] == 1
    gate.clear()  # the next request (sent at step 2 for the chunk due at step 4) hangs
    assert ex.act({"step": 2})[0] == 2
    assert pol.in_flight.wait(10)
    # steps 3..7 are still covered by the first chunk: the loop must not wait for the hanging request
    for t in range(3, T):
        assert ex.act({"step": t})[0] == t
    assert ex.stats.stalls == 0
    gate.set()  # step 8 is beyond the first chunk: now the loop waits for the prefetched chunk
    assert ex.act({"step": T})[0] == T
    assert pol.queried_at[:2] == [0, 2]
    ex.close()


def test_prefetch_with_latency_aligns_late_chunks() -> None:
    pol = StepPolicy(latency_s=0.01)
    ex = ChunkExecutor(pol, execute_steps=4, prefetch_steps=3)
    acts = run(ex, 40, dt=0.002)
    np.testing.assert_array_equal(acts[:, 0], np.arange(40))  # every action matches its step
    assert ex.stats.queries >= 40 // 4 - 1
    ex.close()


def test_prefetch_with_ensembling_stays_aligned() -> None:
    ex = ChunkExecutor(StepPolicy(latency_s=0.003), execute_steps=2, prefetch_steps=2, ensemble_coef=0.3)
    np.testing.assert_allclose(run(ex, 30, dt=0.001)[:, 0], np.arange(30), atol=1e-5)
    ex.close()


def test_reset_and_validation() -> None:
    pol = StepPolicy()
    ex = ChunkExecutor(pol, execute_steps=4)
    run(ex, 6)
    ex.reset()
    assert ex.step == 0 and ex.act({"step": 0})[0] == 0
    with pytest.raises(ValueError, match="execute_steps"):
        ChunkExecutor(pol, execute_steps=0)
    with pytest.raises(ValueError, match="chunk length"):
        ChunkExecutor(pol, execute_steps=T + 1).act({"step": 0})
    with pytest.raises(ValueError, match="prefetch_steps"):
        run(ChunkExecutor(pol, execute_steps=6, prefetch_steps=4), 8)


def test_policy_errors_surface_in_the_loop() -> None:
    class Broken:
        def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
            if obs["step"] > 0:
                raise RuntimeError("robot unplugged")
            return {"actions": np.zeros((T, 2), np.float32)}

    ex = ChunkExecutor(Broken(), execute_steps=2, prefetch_steps=1)
    ex.act({"step": 0})
    with pytest.raises(RuntimeError, match="unplugged"):
        for _ in range(5):
            ex.act({"step": ex.step})
    ex.close()

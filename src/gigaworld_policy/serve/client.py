"""Robot-side client of the policy server: numpy + msgpack + websockets only (no torch anywhere in its imports).

    client = PolicyClient("127.0.0.1", 8000)
    client.metadata["robot_types"]["aloha"]["cameras"]
    out = client.infer({"images": {...}, "state": state, "prompt": "...", "robot_type": "aloha"}, seed=0)
    out["actions"]  # float32 [T, action dims], absolute robot units; out["timing"] server + client timings

Error replies raise :class:`PolicyServerError` (``.kind``, ``.message``); the connection stays usable.
One client is one connection; calls from several threads are serialized.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from typing import Any

import numpy as np

from gigaworld_policy.serve.protocol import PROTOCOL_VERSION, ProtocolError, packb, unpackb


class PolicyServerError(RuntimeError):
    """The server answered with an error reply."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class PolicyClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 8000, *, timeout: float = 60.0,
                 max_reply_bytes: int = 256 << 20) -> None:
        from websockets.sync.client import connect

        self.uri = f"ws://{host}:{port}"
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self._ws = connect(self.uri, open_timeout=timeout, close_timeout=5, compression=None, proxy=None,
                           max_size=max_reply_bytes)
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._episode_rng: np.random.Generator | None = None  # set by reset(seed=...)
        hello = self._recv()
        if hello.get("type") != "metadata":
            raise ProtocolError(f"expected a metadata message on connect, got type {hello.get('type')!r}")
        if hello.get("protocol") != PROTOCOL_VERSION:
            self.close()
            raise PolicyServerError("ProtocolVersionError", f"server speaks protocol {hello.get('protocol')!r}, "
                                    f"this client {PROTOCOL_VERSION}")
        self.metadata: dict[str, Any] = hello["metadata"]

    def _recv(self) -> dict[str, Any]:
        raw = self._ws.recv(timeout=self.timeout)
        msg = unpackb(raw)
        if not isinstance(msg, dict):
            raise ProtocolError(f"server sent a {type(msg).__name__}, expected a map")
        return msg

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request (``protocol`` and ``id`` are filled in) and return the reply; raises on error replies."""
        with self._lock:
            rid = next(self._ids)
            self._ws.send(packb({"protocol": PROTOCOL_VERSION, "id": rid, **message}))
            reply = self._recv()
        if reply.get("type") == "error":
            err = reply.get("error") or {}
            raise PolicyServerError(str(err.get("type", "Error")), str(err.get("message", "")))
        if reply.get("id") != rid:
            raise ProtocolError(f"reply id {reply.get('id')!r} does not match request id {rid}")
        return reply

    def infer(self, observation: dict[str, Any], *, seed: int | None = None, num_steps: int | None = None,
              return_video: bool = False) -> dict[str, Any]:
        """Observation (docs/CONTRACTS.md) -> {"actions", "timing"[, "video"]}; timing adds roundtrip_ms."""
        t0 = time.perf_counter()
        if seed is None and self._episode_rng is not None:
            seed = int(self._episode_rng.integers(1 << 62))
        reply = self.request({"type": "infer", "observation": observation, "seed": seed, "num_steps": num_steps,
                              "return_video": return_video})
        out = {"actions": reply["actions"], "timing": dict(reply.get("timing", {}))}
        if "video" in reply:
            out["video"] = reply["video"]
        out["timing"]["roundtrip_ms"] = (time.perf_counter() - t0) * 1000.0
        return out

    def reset(self, seed: int | None = None) -> None:
        """Policy protocol hook: new episode. ``seed``: the episode's calls that pass no seed send seeds drawn
        from a generator seeded with it, so a rollout through the server replays exactly; None: unseeded."""
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"reset 'seed': expected a non-negative int or None, got {seed!r}")
        self._episode_rng = np.random.default_rng(seed) if seed is not None else None

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def health(host: str = "127.0.0.1", port: int = 8000, timeout: float = 5.0) -> bool:
    """True when ``GET /healthz`` answers 200."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(f"http://{host}:{port}/healthz", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False

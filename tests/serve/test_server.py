from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from gigaworld_policy.policy import Policy
from gigaworld_policy.serve.client import PolicyClient, PolicyServerError, health
from gigaworld_policy.serve.protocol import PROTOCOL_VERSION, packb, unpackb
from gigaworld_policy.serve.server import PolicyServer, ServerThread

from .conftest import CAMERA, ROBOT, make_obs


def raw_connection(server: PolicyServer) -> Any:
    ws = connect(f"ws://127.0.0.1:{server.port}", compression=None, proxy=None, max_size=None)
    hello = unpackb(ws.recv(timeout=30))
    assert hello["type"] == "metadata"
    return ws


def infer_request(obs: Any, **kw: Any) -> dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "type": "infer", "id": 1, "observation": obs, "seed": 5, "num_steps": 2,
            **kw}


def test_metadata_on_connect_and_health(server: PolicyServer, policy: Policy) -> None:
    assert health("127.0.0.1", server.port)
    with PolicyClient("127.0.0.1", server.port) as c:
        md = c.metadata
        assert md["protocol"] == PROTOCOL_VERSION
        assert md["robot_types"][ROBOT]["cameras"] == [CAMERA]
        assert md["chunk_length"] == policy.config.model.action_horizon
        assert md["robot_types"][ROBOT]["control_rate_hz"] == 50.0
        again = c.request({"type": "metadata"})
        assert again["metadata"] == md


def test_health_endpoint_is_plain_http(server: PolicyServer) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
        assert r.status == 200 and r.read().strip() == b"ok"


def test_served_actions_equal_in_process(server: PolicyServer, policy: Policy) -> None:
    obs = make_obs(11)
    with PolicyClient("127.0.0.1", server.port) as c:
        out = c.infer(obs, seed=123, num_steps=3)
        vid = c.infer(obs, seed=123, num_steps=3, return_video=True)
    local = policy.infer(obs, seed=123, num_steps=3)
    np.testing.assert_array_equal(out["actions"], local["actions"])
    assert out["actions"].dtype == np.float32
    for k in ("preprocess_ms", "model_ms", "postprocess_ms", "total_ms", "server_ms", "decode_ms", "queue_ms",
              "roundtrip_ms"):
        assert out["timing"][k] >= 0, k
    assert out["timing"]["roundtrip_ms"] >= out["timing"]["server_ms"] >= out["timing"]["model_ms"]
    np.testing.assert_array_equal(vid["video"], policy.infer(obs, seed=123, num_steps=3, return_video=True)["video"])


def test_client_reset_seed_replays_an_episode(server: PolicyServer) -> None:
    obs = make_obs(12)
    with PolicyClient("127.0.0.1", server.port) as c:
        runs = []
        for seed in (9, 9, 10):
            c.reset(seed=seed)
            runs.append(np.stack([c.infer(obs, num_steps=2)["actions"] for _ in range(2)]))
        c.reset()
        with pytest.raises(ValueError, match="reset 'seed'"):
            c.reset(seed=-1)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0][0], runs[0][1]) and not np.allclose(runs[0], runs[2])


def _bad_frames() -> list[tuple[str, bytes | str, str, str]]:
    good = make_obs(0)
    req = infer_request(good)
    big_ok = packb(infer_request(good))
    frames: list[tuple[str, bytes | str, str, str]] = []
    for key in ("images", "state", "prompt", "robot_type"):
        obs = {k: v for k, v in good.items() if k != key}
        frames.append((f"missing {key}", packb(infer_request(obs)), "PolicyInputError", key))
    frames += [
        ("float image", packb(infer_request({**good, "images": {CAMERA: np.zeros((8, 8, 3), np.float32)}})),
         "PolicyInputError", "uint8"),
        ("wrong image shape", packb(infer_request({**good, "images": {CAMERA: np.zeros((8, 8), np.uint8)}})),
         "PolicyInputError", r"\[H, W, 3\]"),
        ("nan state", packb(infer_request({**good, "state": np.full(14, np.nan, np.float32)})),
         "PolicyInputError", "NaN"),
        ("inf state", packb(infer_request({**good, "state": np.full(14, np.inf)})), "PolicyInputError", "inf"),
        ("unknown robot", packb(infer_request({**good, "robot_type": "marsrover"})), "PolicyInputError",
         "unknown robot type"),
        ("robot without stats", packb(infer_request({**good, "robot_type": "metaworld_sawyer"})),
         "PolicyInputError", "no normalization statistics"),
        ("no observation", packb({**req, "observation": None}), "PolicyInputError", "observation"),
        ("bad seed", packb({**req, "seed": "x"}), "PolicyInputError", "seed"),
        ("bad num_steps", packb({**req, "num_steps": 0}), "PolicyInputError", "num_steps"),
        ("wrong protocol", packb({**req, "protocol": PROTOCOL_VERSION + 1}), "ProtocolVersionError", "protocol"),
        ("no protocol", packb({k: v for k, v in req.items() if k != "protocol"}), "ProtocolVersionError",
         "protocol"),
        ("unknown type", packb({**req, "type": "dance"}), "ProtocolError", "dance"),
        ("truncated", big_ok[: len(big_ok) // 2], "ProtocolError", "msgpack"),
        ("not msgpack", b"\xc1\xc1\xc1 hello", "ProtocolError", "msgpack"),
        ("not a map", packb([1, 2, 3]), "ProtocolError", "map"),
        ("text frame", "hello", "ProtocolError", "binary"),
        ("pickle-like ndarray", msgpack.packb({**{k: v for k, v in req.items() if k != "observation"},
                                               "observation": {"__ndarray__": True, "dtype": "|O", "shape": [1],
                                                               "data": b"\0" * 8}}, use_bin_type=True),
         "ProtocolError", "dtype"),
        ("oversized", packb({**req, "padding": b"\0" * (1 << 20)}), "RequestTooLarge", "limit"),
    ]
    return frames


@pytest.mark.parametrize("name, frame, kind, match", _bad_frames(), ids=[f[0] for f in _bad_frames()])
def test_bad_requests_get_error_replies_and_the_connection_survives(server: PolicyServer, name: str,
                                                                    frame: bytes | str, kind: str, match: str) -> None:
    ws = raw_connection(server)
    try:
        ws.send(frame)
        reply = unpackb(ws.recv(timeout=30))
        assert reply["type"] == "error", reply
        assert reply["error"]["type"] == kind, reply
        import re

        assert re.search(match, reply["error"]["message"]), reply["error"]["message"]
        ws.send(packb(infer_request(make_obs(0))))  # the same connection still works
        ok = unpackb(ws.recv(timeout=30))
        assert ok["type"] == "result" and ok["actions"].shape[1] == 14
    finally:
        ws.close()
    with PolicyClient("127.0.0.1", server.port) as c:  # and so does a new one
        assert c.infer(make_obs(0), num_steps=1)["actions"].shape[1] == 14


def test_client_raises_named_errors(server: PolicyServer) -> None:
    with PolicyClient("127.0.0.1", server.port) as c:
        with pytest.raises(PolicyServerError, match="state") as e:
            c.infer({**make_obs(0), "state": np.zeros(3)})
        assert e.value.kind == "PolicyInputError"
        assert c.infer(make_obs(0), num_steps=1)["actions"].shape[1] == 14


def test_frame_beyond_hard_limit_closes_only_that_connection(server: PolicyServer) -> None:
    ws = raw_connection(server)
    ws.send(b"\0" * (4 * server.max_request_bytes + 16))
    with pytest.raises(ConnectionClosed) as e:
        ws.recv(timeout=30)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009  # message too big
    with PolicyClient("127.0.0.1", server.port) as c:
        assert c.infer(make_obs(0), num_steps=1)["actions"].shape[1] == 14


def test_load_concurrent_clients_no_failures(server: PolicyServer, policy: Policy) -> None:
    n_clients, per_client = 6, 40
    expected = {s: policy.infer(make_obs(s % 3), seed=s, num_steps=1)["actions"] for s in range(6)}
    failures: list[str] = []
    done = [0] * n_clients

    def worker(i: int) -> None:
        try:
            with PolicyClient("127.0.0.1", server.port, timeout=60) as c:
                for j in range(per_client):
                    s = (i + j) % 6
                    out = c.infer(make_obs(s % 3), seed=s, num_steps=1)
                    if not np.array_equal(out["actions"], expected[s]):
                        failures.append(f"client {i} request {j}: wrong actions")
                    if j % 10 == 3:  # interleave bad requests: they must not disturb anyone
                        try:
                            c.infer({**make_obs(0), "robot_type": "nope"})
                            failures.append(f"client {i} request {j}: bad request succeeded")
                        except PolicyServerError:
                            pass
                    done[i] += 1
        except Exception as e:  # reported below
            failures.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), f"load test did not finish in time ({time.monotonic() - t0:.0f} s)"
    assert failures == []
    assert sum(done) == n_clients * per_client


class SlowPolicy:
    """A policy stand-in whose inference blocks until released (tests the per-request timeout)."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.release = inner, threading.Event()

    def metadata(self) -> dict[str, Any]:
        return self.inner.metadata()

    def infer(self, obs: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if obs.get("prompt") == "slow":
            self.release.wait(30)
        return self.inner.infer(obs, **kw)


def test_timeout_reply_and_server_keeps_serving(policy: Policy) -> None:
    slow = SlowPolicy(policy)
    srv = PolicyServer(slow, port=0, request_timeout_s=0.3)  # type: ignore[arg-type]
    with ServerThread(srv):
        with PolicyClient("127.0.0.1", srv.port) as c:
            with pytest.raises(PolicyServerError, match="no reply within") as e:
                c.infer({**make_obs(0), "prompt": "slow"})
            assert e.value.kind == "Timeout"
            slow.release.set()
            assert c.infer(make_obs(0), num_steps=1)["actions"].shape[1] == 14


def test_gwp_serve_cli_process(checkpoint: Any, policy: Policy, tmp_path: Path) -> None:
    """`gwp serve` in its own process: health, metadata, same actions as in-process, clean shutdown."""
    import socket
    import subprocess
    import sys

    obs = make_obs(5)
    # The in-process reference first, so the two processes never compute at once on a 2-core machine.
    expected = policy.infer(obs, seed=9, num_steps=2)["actions"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe nobody reads: a full pipe would block the server
    proc = subprocess.Popen([sys.executable, "-m", "gigaworld_policy.cli", "serve", "--checkpoint", str(checkpoint),
                             "--port", str(port), "--num-steps", "2"], stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not health("127.0.0.1", port, timeout=1.0):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "gwp serve did not become healthy"
            time.sleep(0.1)
        with PolicyClient("127.0.0.1", port) as c:
            assert c.metadata["checkpoint"] == str(checkpoint) and c.metadata["num_steps"] == 2
            np.testing.assert_array_equal(c.infer(obs, seed=9, num_steps=2)["actions"], expected)
            np.testing.assert_array_equal(c.infer(obs, seed=9)["actions"], expected)  # --num-steps: its default
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

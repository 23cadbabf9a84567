"""`gwp serve`: a WebSocket policy server (websockets asyncio API, msgpack + numpy codec of protocol.py).

On connect the server sends the metadata message; then each binary frame is one request answered by one
reply, in order, on that connection. Health check: ``GET /healthz`` answers ``200 ok``.

Concurrency: the event loop only moves bytes. Decoding, validation, inference and encoding run in a
thread pool; the Policy holds one lock around the model, so requests from several clients queue for the
model compute only. Limits: requests above ``max_request_bytes`` get a ``RequestTooLarge`` error reply;
frames above ``4 x max_request_bytes`` (websockets' ``max_size``) close the connection with code 1009;
a request not answered within ``request_timeout_s`` gets a ``Timeout`` error reply (the computation
itself cannot be interrupted and finishes in the background).

Errors never close the connection: every bad request gets
``{"type": "error", "error": {"type", "message"}}`` naming the problem, and the server keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from gigaworld_policy.serve.protocol import PROTOCOL_VERSION, ProtocolError, error_message, packb, unpackb

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

    from gigaworld_policy.policy import Policy

log = logging.getLogger("gigaworld_policy.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_REQUEST_BYTES = 16 << 20
HEALTH_PATH = "/healthz"


class RequestError(Exception):
    """A request the server refuses; ``kind`` becomes error.type in the reply."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1000.0


class PolicyServer:
    def __init__(self, policy: Policy, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, request_timeout_s: float = 30.0,
                 max_workers: int = 8) -> None:
        if max_request_bytes <= 0:
            raise ValueError(f"max_request_bytes must be > 0, got {max_request_bytes}")
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        self.policy = policy
        self.host, self.port = host, int(port)
        self.max_request_bytes = int(max_request_bytes)
        self.request_timeout_s = float(request_timeout_s)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gwp-infer")
        self._metadata = {"type": "metadata", "protocol": PROTOCOL_VERSION,
                          "metadata": {"protocol": PROTOCOL_VERSION, **policy.metadata()}}
        self._metadata_bytes = packb(self._metadata)
        self.requests_served = 0
        self.errors_sent = 0

    # -- request handling (worker thread) ----------------------------------------------------------
    def handle(self, raw: bytes | str, received: float) -> bytes:
        """One request frame -> one reply frame. Never raises."""
        start = time.perf_counter()
        request_id = None
        try:
            if isinstance(raw, str):
                raise RequestError("ProtocolError", "expected a binary msgpack frame, got a text frame")
            if len(raw) > self.max_request_bytes:
                raise RequestError("RequestTooLarge", f"request is {len(raw)} bytes; the limit is "
                                   f"{self.max_request_bytes} bytes (server --max-request-bytes)")
            msg = unpackb(raw)
            t_decoded = time.perf_counter()
            if not isinstance(msg, dict):
                raise RequestError("ProtocolError", f"request must be a msgpack map, got {type(msg).__name__}")
            request_id = msg.get("id")
            if "protocol" not in msg:
                raise RequestError("ProtocolVersionError", f"request has no 'protocol' field; this server "
                                   f"speaks protocol {PROTOCOL_VERSION}")
            if msg["protocol"] != PROTOCOL_VERSION:
                raise RequestError("ProtocolVersionError", f"'protocol': request speaks {msg['protocol']!r}, "
                                   f"this server speaks {PROTOCOL_VERSION}")
            kind = msg.get("type", "infer")
            if kind == "metadata":
                reply: dict[str, Any] = {**self._metadata, "id": request_id}
            elif kind == "infer":
                reply = self._infer(msg)
                reply["timing"].update(queue_ms=_ms(received, start), decode_ms=_ms(start, t_decoded),
                                       server_ms=_ms(received, time.perf_counter()))
            else:
                raise RequestError("ProtocolError", f"'type': unknown request type {kind!r} (infer, metadata)")
            reply.update(protocol=PROTOCOL_VERSION, id=request_id)
            self.requests_served += 1
            return packb(reply)
        except RequestError as e:
            return self._error(e.kind, e.message, request_id)
        except ProtocolError as e:
            return self._error("ProtocolError", str(e), request_id)
        except Exception as e:  # the server must answer and stay up
            from gigaworld_policy.policy import PolicyInputError

            if isinstance(e, PolicyInputError):
                return self._error("PolicyInputError", str(e), request_id)
            log.exception("request %r failed", request_id)
            return self._error("InternalError", f"{type(e).__name__}: {e}", request_id)

    def _error(self, kind: str, message: str, request_id: Any) -> bytes:
        self.errors_sent += 1
        try:
            return packb(error_message(kind, message, request_id))
        except ProtocolError:  # an id that cannot be encoded
            return packb(error_message(kind, message, None))

    def _infer(self, msg: dict[str, Any]) -> dict[str, Any]:
        obs = msg.get("observation")
        if not isinstance(obs, dict):
            raise RequestError("PolicyInputError", f"'observation': expected a map with images, state, prompt, "
                               f"robot_type; got {type(obs).__name__}")
        seed, num_steps = msg.get("seed"), msg.get("num_steps")
        for name, value in (("seed", seed), ("num_steps", num_steps)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise RequestError("PolicyInputError", f"'{name}': expected an int or nil, got {value!r}")
        return_video = msg.get("return_video", False)
        if not isinstance(return_video, bool):
            raise RequestError("PolicyInputError", f"'return_video': expected a bool, got {return_video!r}")
        out = self.policy.infer(obs, return_video=return_video, num_steps=num_steps, seed=seed)
        reply = {"type": "result", "actions": out["actions"], "timing": dict(out["timing"])}
        if "video" in out:
            reply["video"] = out["video"]
        return reply

    # -- asyncio side ------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async def _connection(self, ws: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        try:
            await ws.send(self._metadata_bytes)
            async for raw in ws:
                received = time.perf_counter()
                fut = loop.run_in_executor(self._pool, self.handle, raw, received)
                try:
                    reply = await asyncio.wait_for(asyncio.shield(fut), self.request_timeout_s)
                except TimeoutError:
                    reply = self._error("Timeout", f"no reply within {self.request_timeout_s:g} s "
                                        "(server --request-timeout)", None)
                await ws.send(reply)
        except ConnectionClosed:
            pass

    def serve(self) -> Any:
        """The websockets server context (``async with server.serve() as s``)."""
        from websockets.asyncio.server import serve

        return serve(self._connection, self.host, self.port, process_request=self._process_request,
                     max_size=4 * self.max_request_bytes, compression=None, max_queue=4)

    async def serve_forever(self, ready: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        async with self.serve() as server:
            self.port = bound_port(server)
            if ready is not None:
                ready.set()
            if stop is None:
                await server.serve_forever()
            else:
                await stop.wait()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def bound_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


class ServerThread:
    """Run a PolicyServer on its own event loop in a background thread (tests, benchmarks, notebooks)."""

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gwp-server", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.serve_forever(ready=self._ready, stop=self._stop)

        try:
            asyncio.run(main())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    def start(self, timeout: float = 30.0) -> int:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("policy server did not start in time")
        if self._error is not None:
            raise RuntimeError(f"policy server failed to start: {self._error}") from self._error
        return self.server.port

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self.server.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# -- CLI -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or training run directory")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default loopback; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0: any free port)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even when EMA weights exist")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--workers", type=int, default=8, help="threads decoding/validating/running requests")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the action decoder before serving (compiles at start-up: tens of s on CPU)")
    parser.add_argument("--vae", default=None,
                        help="Wan 2.2 VAE directory (diffusers AutoencoderKLWan) for wan2.2-vae checkpoints")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="action sampler steps per chunk for requests that do not name theirs (default: the "
                             "checkpoint's flow.num_inference_steps; sent in the metadata as num_steps)")


def run(args: argparse.Namespace) -> int:
    from gigaworld_policy.policy import Policy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    policy = Policy.from_checkpoint(args.checkpoint, device=args.device, use_ema=not args.no_ema, vae=args.vae,
                                    num_steps=args.num_steps)
    if args.compile:  # compile now, not inside the first robot's request timeout
        import torch

        t0 = time.perf_counter()
        policy.model.eval().compile_action_decoding(freeze=True)
        obs = {k: v.to(args.device) for k, v in policy.model.example_observation(1).items()}
        with torch.inference_mode():
            policy.model.predict_actions(obs, num_steps=policy.num_steps)
        logging.getLogger(__name__).info("compiled the action decoder in %.1f s", time.perf_counter() - t0)
    server = PolicyServer(policy, host=args.host, port=args.port, max_request_bytes=args.max_request_bytes,
                          request_timeout_s=args.request_timeout, max_workers=args.workers)
    ready = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(server.serve_forever(ready=ready))
        while not ready.is_set() and not task.done():
            await asyncio.sleep(0.01)
        if ready.is_set():
            print(f"serving {policy.checkpoint} on ws://{args.host}:{server.port} (health: "
                  f"http://{args.host}:{server.port}{HEALTH_PATH})", flush=True)
        await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0

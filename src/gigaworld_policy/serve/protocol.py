"""Wire format of the policy server: msgpack messages with an explicit numpy codec (numpy + msgpack only).

Arrays travel as ``{"__ndarray__": True, "dtype": "<f4", "shape": [..], "data": bytes}`` (C order).
Only plain numeric dtypes (bool, signed/unsigned ints, floats) are accepted; object, string, void and
structured dtypes are refused, and nothing is ever unpickled.

Messages (every message is one binary WebSocket frame holding one msgpack map):

  server -> client on connect  {"type": "metadata", "protocol": N, "metadata": {...}}
  client -> server             {"protocol": N, "type": "infer", "id": any, "observation": {...},
                                "seed": int | None, "num_steps": int | None, "return_video": bool}
                               {"protocol": N, "type": "metadata", "id": any}
  server -> client             {"protocol": N, "type": "result", "id": any, "actions": ndarray,
                                "timing": {...}, ["video": ndarray]}
                               {"protocol": N, "type": "error", "id": any | None,
                                "error": {"type": str, "message": str}}

This module must stay importable without torch (the robot-side client depends on it).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
NDARRAY_KEY = "__ndarray__"
ALLOWED_KINDS = frozenset("biuf")  # bool, signed int, unsigned int, float


class ProtocolError(ValueError):
    """A message cannot be encoded/decoded or breaks the protocol; the message names the field."""


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ProtocolError(f"{where}: dtype {dtype!s} is not allowed (only bool, int, uint and float arrays)")


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, "ndarray")
        arr = obj if obj.flags.c_contiguous else obj.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        return {NDARRAY_KEY: True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"cannot encode an object of type {type(obj).__name__} (only dict, list, str, bytes, "
                    "numbers, None and numeric numpy arrays)")


def _decode_ndarray(d: dict[str, Any]) -> np.ndarray:
    try:
        dtype = np.dtype(d["dtype"])
        shape = tuple(int(n) for n in d["shape"])
        data = d["data"]
    except KeyError as e:
        raise ProtocolError(f"ndarray: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"ndarray: bad 'dtype' or 'shape' ({e})") from None
    _check_dtype(dtype, "ndarray 'dtype'")
    if any(n < 0 for n in shape):
        raise ProtocolError(f"ndarray 'shape': negative dimension in {list(shape)}")
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(f"ndarray 'data': expected bytes, got {type(data).__name__}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(f"ndarray 'data': {len(data)} bytes, but shape {list(shape)} of dtype {dtype!s} "
                            f"needs {expected} (truncated?)")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # native byte order, writable


def _object_hook(d: dict[str, Any]) -> Any:
    if d.get(NDARRAY_KEY) is True:
        return _decode_ndarray(d)
    return d


def packb(obj: Any) -> bytes:
    """Encode a message (dicts, lists, scalars, bytes, numeric numpy arrays) to msgpack bytes."""
    try:
        return msgpack.packb(obj, default=_default, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(f"cannot encode message: {e}") from e


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """Decode msgpack bytes; arrays come back as writable numpy arrays. Raises ProtocolError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"expected a binary msgpack frame, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_object_hook, raw=False, strict_map_key=False)
    except ProtocolError:
        raise
    except msgpack.ExtraData:
        raise ProtocolError("payload is not a single msgpack message (extra bytes after it)") from None
    except (ValueError, msgpack.UnpackException, TypeError) as e:
        raise ProtocolError(f"payload is not valid msgpack (truncated or corrupted?): {e}") from None


def error_message(kind: str, message: str, request_id: Any = None) -> dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "type": "error", "id": request_id,
            "error": {"type": kind, "message": message}}

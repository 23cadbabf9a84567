from __future__ import annotations

import subprocess
import sys

import msgpack
import numpy as np
import pytest

from gigaworld_policy.serve.protocol import ProtocolError, packb, unpackb


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32",
                                   "uint64", "float16", "float32", "float64", ">f4", ">i8"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3, 4), (3, 0, 2)])
def test_ndarray_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = np.asarray(rng.normal(size=shape) * 50).astype(dtype)
    y = unpackb(packb({"x": x, "nested": [x, {"y": x}]}))
    for z in (y["x"], y["nested"][0], y["nested"][1]["y"]):
        assert z.shape == x.shape and z.dtype == x.dtype.newbyteorder("=")
        np.testing.assert_array_equal(z, x)
        assert z.flags.writeable


def test_non_contiguous_and_scalars() -> None:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    y = unpackb(packb({"x": x, "i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "s": "hi", "n": None}))
    np.testing.assert_array_equal(y["x"], x)
    assert y["i"] == 3 and y["f"] == 0.5 and y["b"] is True and y["s"] == "hi" and y["n"] is None


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([object()], dtype=object),
                                 np.zeros(2, dtype=np.complex64), np.zeros(2, dtype=[("a", "f4")])])
def test_refuses_non_numeric_dtypes_on_encode(bad: np.ndarray) -> None:
    with pytest.raises(ProtocolError, match="dtype"):
        packb({"x": bad})


@pytest.mark.parametrize("header, match", [
    ({"dtype": "|O", "shape": [1], "data": b"\0" * 8}, "dtype"),
    ({"dtype": "<U1", "shape": [1], "data": b"\0" * 4}, "dtype"),
    ({"dtype": "<f4", "shape": [3], "data": b"\0" * 8}, "truncated"),
    ({"dtype": "<f4", "shape": [-1], "data": b""}, "negative"),
    ({"dtype": "<f4", "data": b""}, "shape"),
    ({"dtype": "not-a-dtype", "shape": [1], "data": b"\0"}, "dtype"),
    ({"dtype": "<f4", "shape": [1], "data": "text"}, "bytes"),
])
def test_refuses_bad_ndarray_headers(header: dict, match: str) -> None:
    raw = msgpack.packb({"x": {"__ndarray__": True, **header}}, use_bin_type=True)
    with pytest.raises(ProtocolError, match=match):
        unpackb(raw)


def test_refuses_truncated_and_garbage_payloads() -> None:
    raw = packb({"x": np.zeros((10, 10), np.float32)})
    with pytest.raises(ProtocolError, match="msgpack"):
        unpackb(raw[:-7])
    with pytest.raises(ProtocolError, match="extra bytes"):
        unpackb(raw + b"\x01")
    with pytest.raises(ProtocolError, match="binary"):
        unpackb("text")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        unpackb(b"\xc1")  # a reserved msgpack byte


def test_client_import_chain_is_torch_free() -> None:
    code = ("import sys; import gigaworld_policy.serve.client, gigaworld_policy.serve.executor, gigaworld_policy; "
            "bad = [m for m in ('torch', 'gigaworld_policy.policy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

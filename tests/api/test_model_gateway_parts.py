"""The model gateway's parts without a platform: OIP translation, and the balancer against real TCP servers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from aiot.api import oip
from aiot.api.replica_pool import NoReplicaAnswered, ReplicaPool
from aiot.errors import ValidationFailed


def test_oip_tensors_become_named_inputs_in_their_shape() -> None:
    inputs = oip.request_to_inputs(
        {
            "inputs": [
                {"name": "t", "shape": [1], "datatype": "FP32", "data": [30.5]},
                {"name": "m", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]},
                {"name": "nested", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]},
                {"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]},
            ]
        }
    )
    assert inputs == {"t": 30.5, "m": [[1, 2, 3], [4, 5, 6]], "nested": [[1, 2], [3, 4]], "image": "aGVsbG8="}


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "inputs"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "inputs[0]"),
        ({"inputs": [{"name": "t", "shape": [-1], "datatype": "FP32", "data": [1]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "t", "shape": [1], "datatype": "FLOAT", "data": [1]}]}, "inputs[0].datatype"),
        ({"inputs": [{"name": "t", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}, "inputs[0].data"),
        ({"inputs": [{"name": "t", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}]}, "inputs[0].data"),
    ],
)
def test_oip_bad_requests_name_the_member(doc: dict, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        oip.request_to_inputs(doc)
    assert caught.value.details["field"] == field


def test_oip_outputs_become_typed_tensors() -> None:
    body = oip.outputs_to_response(
        {"fan": "on", "count": 2, "score": 0.5, "ok": True, "box": [[1, 2], [3, 4]], "faces": [{"x": 1}]},
        "m",
        "1.0.0",
        "req-1",
    )
    tensors = {t["name"]: (t["datatype"], t["shape"], t["data"]) for t in body["outputs"]}
    assert tensors == {
        "fan": ("BYTES", [1], ["on"]),
        "count": ("INT64", [1], [2]),
        "score": ("FP64", [1], [0.5]),
        "ok": ("BOOL", [1], [True]),
        "box": ("INT64", [2, 2], [1, 2, 3, 4]),
        "faces": ("BYTES", [1], ['[{"x":1}]']),
    }
    assert body["id"] == "req-1" and body["model_version"] == "1.0.0"


async def _replica(delay: float, served: list[str], name: str) -> tuple[asyncio.AbstractServer, str]:
    """A keep-alive HTTP server answering each POST after `delay` seconds (recording `name` in `served`)."""

    async def answer(_count: int) -> bytes:
        await asyncio.sleep(delay)
        served.append(name)
        return OK

    return await _server(answer)


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_least_outstanding_requests_favour_the_fast_replica() -> None:
    served: list[str] = []
    slow, slow_url = await _replica(0.2, served, "slow")
    fast, fast_url = await _replica(0.005, served, "fast")
    pool = ReplicaPool(timeout=5)
    try:

        async def client() -> None:
            for _ in range(10):
                await pool.send([slow_url, fast_url], "/v1/predict", b"{}", {"content-type": "application/json"})

        await asyncio.gather(*(client() for _ in range(4)))
    finally:
        await pool.aclose()
        slow.close()
        fast.close()
    assert len(served) == 40
    assert served.count("fast") > 3 * served.count("slow"), served  # round-robin would be 20/20


async def test_a_refusing_replica_is_skipped_and_then_tried_last() -> None:
    served: list[str] = []
    good, good_url = await _replica(0.0, served, "good")
    dead = _closed_port()
    pool = ReplicaPool(timeout=5)
    try:
        answer = await pool.send([dead, good_url], "/v1/predict", b"{}", {})
        assert answer.status == 200 and answer.replica == good_url
        assert pool.order([dead, good_url]) == [good_url, dead]
        with pytest.raises(NoReplicaAnswered) as caught:
            await pool.send([dead], "/v1/predict", b"{}", {})
        assert "ConnectError" in str(caught.value)
    finally:
        await pool.aclose()
        good.close()


async def _server(answer) -> tuple[asyncio.AbstractServer, str]:  # type: ignore[no-untyped-def]
    """A TCP server whose `answer(request_number_on_this_connection)` returns bytes to send, or None to close."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                count += 1
                reply = await answer(count)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def test_a_keepalive_connection_the_replica_closed_is_retried_on_a_new_one() -> None:
    async def first_only(count: int) -> bytes | None:
        return OK if count == 1 else None  # the keep-alive timer wins on the second request

    server, url = await _server(first_only)
    pool = ReplicaPool(timeout=5)
    try:
        for _ in range(4):
            answer = await pool.send([url], "/v1/predict", b"{}", {})
            assert answer.status == 200 and answer.content == b"{}"
    finally:
        await pool.aclose()
        server.close()


async def test_chunked_answers_and_timeouts() -> None:
    from aiot.api.replica_http import ReplicaTimeout

    async def chunked(count: int) -> bytes:
        return (
            b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/json\r\n"
            b'transfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
        )

    async def slow(count: int) -> bytes:
        await asyncio.sleep(2)
        return OK

    chunky, chunky_url = await _server(chunked)
    sleepy, sleepy_url = await _server(slow)
    pool = ReplicaPool(timeout=0.5)
    try:
        answer = await pool.send([chunky_url], "/v1/predict", b"{}", {})
        assert (answer.status, answer.content) == (422, b'{"a": 1}')  # passed through, status and all
        with pytest.raises(ReplicaTimeout):  # raised, not retried elsewhere: the model may still be at it
            await pool.send([sleepy_url], "/v1/predict", b"{}", {})
    finally:
        await pool.aclose()
        chunky.close()
        sleepy.close()

"""Tests a user writes; conftest.py puts them all on uvcffi."""
import asyncio
import json

import anyio
import pytest
from tinyhttp import parse_head, respond

import uvcffi


@pytest.fixture
async def server(anyio_backend):
    """An HTTP server (AnyIO listener) on the test's loop."""
    async def handle(stream):
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            method, target, _ = parse_head(data.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
            await stream.send(respond(method, target, b""))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_runs_on_uvcffi():
    assert isinstance(asyncio.get_running_loop(), uvcffi.Loop)


@pytest.mark.anyio
async def test_http_request_to_server_on_the_test_loop(server):
    with anyio.fail_after(60):
        async with await anyio.connect_tcp("127.0.0.1", server) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            try:
                while True:
                    reply += await client.receive()
            except anyio.EndOfStream:
                pass
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    info = json.loads(body)
    assert info["uvcffi"] is True and info["loop"].startswith("uvcffi."), info

"""Tests a user writes; conftest.py puts them all on uvcffi."""
import asyncio
import json
import urllib.request

import pytest
import pytest_asyncio
from tinyhttp import handle

import uvcffi


@pytest_asyncio.fixture
async def server():
    """An HTTP server on the test's loop."""
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield srv
    srv.close()
    await srv.wait_closed()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_loop():
    return asyncio.get_running_loop()


@pytest.mark.asyncio
async def test_runs_on_uvcffi():
    assert isinstance(asyncio.get_running_loop(), uvcffi.Loop)


@pytest.mark.asyncio
async def test_http_request_to_server_on_the_test_loop(server):
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    # a blocking client in the loop's default executor, the server on the loop
    body = await asyncio.wait_for(
        asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read()), 60)
    info = json.loads(body)
    assert info["uvcffi"] is True and info["loop"].startswith("uvcffi."), info


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_fixture_loop(module_loop):
    assert asyncio.get_running_loop() is module_loop
    assert isinstance(module_loop, uvcffi.Loop)

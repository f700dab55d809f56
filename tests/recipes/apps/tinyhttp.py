"""A minimal HTTP/1.1 server on asyncio streams (one request per connection), answering the
routes the recipe tests use: GET / (loop info), POST /echo (size and SHA-256 of the body),
GET /big?n=N.  For the recipes that run plain asyncio code (asyncio.Runner, asyncio.run)."""
import asyncio
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

from loopinfo import loop_info


def parse_head(head):
    """(method, target, headers) of a request head (bytes up to the blank line)."""
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def respond(method, target, body):
    """The whole response (bytes) to one request."""
    url = urlsplit(target)
    ctype = "application/json"
    if method == "POST" and url.path == "/echo":
        payload = json.dumps(
            dict(loop_info(), size=len(body), sha256=hashlib.sha256(body).hexdigest())).encode()
    elif url.path == "/big":
        payload, ctype = b"x" * int(parse_qs(url.query)["n"][0]), "application/octet-stream"
    else:
        payload = json.dumps(loop_info()).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + payload


async def handle(reader, writer):
    """asyncio.start_server's handler."""
    try:
        method, target, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        writer.write(respond(method, target, body))
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # a client that went away (the tests' readiness probes connect and close)
    finally:
        writer.close()

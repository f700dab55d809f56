"""The ASGI app the uvicorn and hypercorn recipes serve.

GET /            the loop it runs on (JSON)
POST /echo       the size and SHA-256 of the request body, and the loop
GET /big?n=N     N bytes of b"x"
GET /hold?marker=PATH&release=PATH
                 writes its loop info to marker, then blocks its worker's loop (on purpose)
                 until release exists (at most 30 s): the --workers test uses it to make the
                 other worker take the next connection.
Lifespan startup and shutdown each print a line on stderr (loopinfo.say)."""
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

from loopinfo import loop_info, say


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                say("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                say("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    info = loop_info()
    ctype = b"application/json"
    if path == "/echo":
        info.update(size=len(body), sha256=hashlib.sha256(body).hexdigest())
        payload = json.dumps(info).encode()
    elif path == "/big":
        payload, ctype = b"x" * int(query["n"]), b"application/octet-stream"
    elif path == "/hold":
        with open(query["marker"] + ".tmp", "w") as f:
            json.dump(info, f)
        os.rename(query["marker"] + ".tmp", query["marker"])
        deadline = time.monotonic() + 30
        while not os.path.exists(query["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)  # blocks this worker's loop: the other worker must accept
        payload = json.dumps(info).encode()
    else:
        payload = json.dumps(info).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", ctype), (b"content-length", str(len(payload)).encode())],
    })
    await send({"type": "http.response.body", "body": payload})

"""What the recipe apps report about the loop they run on: the server side's half of each
recipe test's check that the app really ran on uvcffi."""
import asyncio
import json
import os
import sys

import uvcffi


def loop_info():
    """The running loop, as the recipe tests read it back from a response."""
    loop = asyncio.get_running_loop()
    return {
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "uvcffi": isinstance(loop, uvcffi.Loop),
        "pid": os.getpid(),
        "runtime": sys.implementation.name,
    }


def say(event):
    """One line on stderr, which the tests read from the server's log:
    ``recipe-app: EVENT {json of loop_info()}``."""
    line = f"recipe-app: {event} {json.dumps(loop_info(), sort_keys=True)}"
    # One write() for the line and its newline: the workers of a server share the log,
    # and print() writes the two apart, so another worker's line could land between them
    # (seen once in CI: two shutdown lines run together).
    sys.stderr.flush()
    os.write(sys.stderr.fileno(), (line + "\n").encode())

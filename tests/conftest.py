import gc
import signal
import sys
import tempfile

import pytest
from _helpers import LOOP_FACTORIES
from _tls_certs import Certs

import uvcffi

try:
    from pytest_asyncio.plugin import PytestAsyncioSpecs as _AsyncioSpecs
except ImportError:  # older pytest-asyncio (the one pip picks for Python 3.9)
    _AsyncioSpecs = object

# pytest-asyncio runs every `async def` test on a uvcffi loop: through the loop-factory hook
# where the installed version has it, else through the (older) policy fixture.
if hasattr(_AsyncioSpecs, "pytest_asyncio_loop_factories"):

    def pytest_asyncio_loop_factories(config, item):
        return {"uvcffi": uvcffi.new_event_loop}

else:

    @pytest.fixture(scope="session")
    def event_loop_policy():
        return uvcffi.EventLoopPolicy()


def pytest_configure(config):
    # Tests send Ctrl-C to this process and to Python children.  A run started as a
    # background job of a script has SIGINT ignored, and every child inherits that: give
    # the suite the handler python installs when SIGINT is not ignored at start-up.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def anyloop(request):
    """The same scenario on uvcffi and on asyncio's selector loop: they must agree.
    ``anyloop.kind`` names the loop."""
    lp = LOOP_FACTORIES[request.param]()
    lp.kind = request.param
    yield lp
    if not lp.is_closed():
        lp.close()
    gc.collect()


@pytest.fixture
def loop():
    """A fresh uvcffi loop for synchronous tests; closed (and checked closed) afterwards."""
    lp = uvcffi.new_event_loop()
    yield lp
    if not lp.is_closed():
        lp.close()
    gc.collect()


def pytest_report_header(config):
    impl = sys.implementation.name
    return f"uvcffi on {impl} {sys.version.split()[0]}, libuv {uvcffi.libuv_version()}"


@pytest.fixture(scope="module")
def certs():
    """A CA and the server and client certificates it signed (tests/_tls_certs.py), made
    once per test module that asks for them (the TLS tests need the openssl command)."""
    with tempfile.TemporaryDirectory() as d:
        yield Certs(d)

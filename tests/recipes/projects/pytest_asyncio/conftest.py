"""The recipe: every pytest-asyncio test and fixture runs on a uvcffi loop.

pytest-asyncio 1.4+ takes loop factories from the pytest_asyncio_loop_factories hook (and
deprecates overriding event_loop_policy); before 1.4 the way is the event_loop_policy
fixture.  pip installs 1.4+ where Python is 3.10+, 1.2 on Python 3.9 (PyPy 3.9 here)."""
import pytest

import uvcffi

try:
    from pytest_asyncio.plugin import PytestAsyncioSpecs
except ImportError:  # pytest-asyncio before 1.4
    PytestAsyncioSpecs = None

if hasattr(PytestAsyncioSpecs, "pytest_asyncio_loop_factories"):

    def pytest_asyncio_loop_factories(config, item):
        return {"uvcffi": uvcffi.new_event_loop}

else:

    @pytest.fixture(scope="session")
    def event_loop_policy():
        return uvcffi.EventLoopPolicy()

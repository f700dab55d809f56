"""The recipe: AnyIO's pytest plugin runs every @pytest.mark.anyio test on a uvcffi loop
(AnyIO 4.2+: the asyncio backend's loop_factory option)."""
import pytest

import uvcffi


@pytest.fixture
def anyio_backend():
    return ("asyncio", {"loop_factory": uvcffi.new_event_loop})

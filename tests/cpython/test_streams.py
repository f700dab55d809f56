"""test_streams (StreamReader/StreamWriter, open_connection, start_server ...) on uvcffi.

These tests make their loop with asyncio.new_event_loop(): a policy returning uvcffi loops
is installed around each of them."""
import asyncio
import warnings

import pytest

from ._harness import (UvcffiPolicy, requires_cpython_311, requires_stdlib_tests, test_utils,
                       uvcffi_case)

pytestmark = [requires_stdlib_tests, requires_cpython_311]


@pytest.fixture(autouse=True)
def _uvcffi_policy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(UvcffiPolicy())
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(old)


if test_utils is not None:
    from test.test_asyncio import test_streams

    UvcffiStreamTests = uvcffi_case(
        "UvcffiStreamTests",
        (test_streams.StreamTests,),
        factory="_unused_factory",
        module=__name__,
    )

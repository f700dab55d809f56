"""Recipe: test suites whose async tests run on uvcffi.

pytest-asyncio (projects/pytest_asyncio/conftest.py):
    1.4+:       def pytest_asyncio_loop_factories(config, item):
                    return {"uvcffi": uvcffi.new_event_loop}
    before 1.4: @pytest.fixture(scope="session")
                def event_loop_policy():
                    return uvcffi.EventLoopPolicy()
AnyIO's pytest plugin (projects/anyio_pytest/conftest.py):
    @pytest.fixture
    def anyio_backend():
        return ("asyncio", {"loop_factory": uvcffi.new_event_loop})

Each project is copied to a temporary directory and run by a pytest of its own (a
subprocess, deprecation warnings of pytest-asyncio as errors); its tests check the running
loop and make an HTTP request to a server on the test's loop.  The same project without the
conftest.py must fail, so the check is known to see the difference."""
import shutil
import subprocess

import pytest
from recipekit import APPS, RUNTIME, child_env, dist_version, major_minor, python, require

PROJECTS = APPS.parent / "projects"
TIMEOUT = 120


def run_project(tmp_path, name, *, with_conftest=True):
    project = tmp_path / name
    shutil.copytree(PROJECTS / name, project, ignore=shutil.ignore_patterns("__pycache__"))
    if not with_conftest:
        (project / "conftest.py").unlink()
    argv = python("-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                  "-W", "error::pytest.PytestDeprecationWarning")
    try:
        done = subprocess.run(argv, cwd=project, env=child_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        pytest.fail(f"the project's pytest ran over {TIMEOUT} s:\n"
                    f"{(exc.output or b'').decode(errors='replace')}", pytrace=False)
    return done.returncode, done.stdout.decode(errors="replace")


@pytest.mark.timeout(2 * TIMEOUT + 60)
def test_pytest_asyncio(tmp_path):
    require("pytest_asyncio", "pytest-asyncio")
    version = dist_version("pytest-asyncio")
    from pytest_asyncio import plugin

    has_hook = hasattr(getattr(plugin, "PytestAsyncioSpecs", None),
                       "pytest_asyncio_loop_factories")
    # which of the two ways conftest.py takes on this runtime
    assert has_hook == (major_minor(version) >= (1, 4)), version

    rc, out = run_project(tmp_path, "pytest_asyncio")
    assert rc == 0 and "3 passed" in out, f"pytest-asyncio {version} on {RUNTIME}:\n{out}"

    rc, out = run_project(tmp_path / "control", "pytest_asyncio", with_conftest=False)
    assert rc == 1 and "3 failed" in out, out


@pytest.mark.timeout(2 * TIMEOUT + 60)
def test_anyio_pytest_plugin(tmp_path):
    require("anyio")
    version = dist_version("anyio")
    if major_minor(version) < (4, 2):
        pytest.skip(f"anyio {version} does not honour the loop_factory backend option "
                    "(AnyIO 4.2+ does)")

    rc, out = run_project(tmp_path, "anyio_pytest")
    assert rc == 0 and "2 passed" in out, f"anyio {version} on {RUNTIME}:\n{out}"

    rc, out = run_project(tmp_path / "control", "anyio_pytest", with_conftest=False)
    assert rc == 1 and "2 failed" in out, out

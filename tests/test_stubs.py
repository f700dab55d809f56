"""The type stubs of the extension modules: loop/_uv.pyi is what tools/gen_uv_stub.py makes
from csrc/*.h, and both stubs name what the built modules have."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")


def stub_names(path, cls=None):
    """The public names a stub declares at module level, or in its class ``cls``."""
    with open(path) as f:
        tree = ast.parse(f.read())
    body = tree.body
    if cls is not None:
        (node,) = [n for n in body if isinstance(n, ast.ClassDef) and n.name == cls]
        body = node.body
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def test_uv_stub_is_generated_from_the_headers():
    res = subprocess.run([sys.executable, os.path.join(TOOLS, "gen_uv_stub.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_uv_stub_names_what_lib_has():
    from uvcffi._uv import lib

    declared = stub_names(os.path.join(ROOT, "loop", "_uv.pyi"), "_Lib")
    assert declared == {n for n in dir(lib) if not n.startswith("_")}


def test_accel_stub_names_what_the_module_has():
    try:
        from uvcffi import _accel
    except ImportError:
        pytest.skip("no accelerator here (PyPy, or built without it)")
    path = os.path.join(ROOT, "loop", "_accel.pyi")
    assert stub_names(path) == {n for n in dir(_accel) if not n.startswith("_")}
    assert stub_names(path, "Accel") == {n for n in dir(_accel.Accel) if not n.startswith("_")}

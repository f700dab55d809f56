"""The structure the code promises, checked on its source.

The transports use the loop only through loop/_owners.py (the contract between the loop and
the owners of its handle slots) and its public asyncio methods: no module under transports/
reads or writes a private attribute of the loop.
"""
import ast
import os

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSPORTS = os.path.join(os.path.dirname(HERE), "transports")


def _loop_private_uses(path):
    """(line, text) of every attribute access ``<...loop>._name`` in the module at ``path``:
    on a name or attribute called ``loop`` or ``_loop`` (``self._loop._x``, ``loop._x``),
    and ``__dict__`` of either."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        base = node.value
        name = base.id if isinstance(base, ast.Name) else (
            base.attr if isinstance(base, ast.Attribute) else None)
        if name in ("loop", "_loop"):
            found.append((node.lineno, f"{name}.{node.attr}"))
    return sorted(found)


def test_transports_touch_no_private_attribute_of_the_loop():
    offences = []
    for entry in sorted(os.listdir(TRANSPORTS)):
        if entry.endswith(".py"):
            for line, text in _loop_private_uses(os.path.join(TRANSPORTS, entry)):
                offences.append(f"transports/{entry}:{line}: {text}")
    assert offences == []


def test_the_check_sees_an_offence(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(self, loop):\n    loop._uv\n    self._loop._slots[0] = 1\n"
                      "    loop.__dict__\n    loop.call_soon(print)\n")
    assert [t for _, t in _loop_private_uses(str(sample))] == [
        "loop._uv", "_loop._slots", "loop.__dict__"]

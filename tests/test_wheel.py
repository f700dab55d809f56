"""Packaging: `python -m build` makes an sdist and, from it, a wheel that carries its libuv.

The wheel is installed in a fresh virtualenv and run inside a mount namespace (unshare -m)
where overlays whiteout every system libuv file (libuv.so, libuv.so.1, ...) and every C
compiler and linker on PATH: there the loader cannot find a libuv of the system (checked with
dlopen before uvcffi is imported), `pip install` of the wheel works, a TCP echo runs on a
uvcffi loop, and /proc/self/maps shows that the one libuv mapped is uvcffi/libuv.so.1 inside
the installed package. The mounts live and die with the namespace; nothing is cached between
runs (the tree is copied, built, installed and run afresh in pytest's tmp_path).

Runs on the interpreter running the tests: a CPython wheel under CPython, a PyPy wheel
under PyPy. About 20-25 s on CPython and 30-40 s on PyPy on the 2-core machine.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING_LIBUV = (
    "uvcffi: libuv not found. Install the system package (Debian/Ubuntu: "
    "`apt-get install libuv1-dev pkg-config`)"
)
# What a machine without a compiler lacks: C compilers (any prefix or version suffix) and linkers.
COMPILER = re.compile(
    r"(^|-)(cc|c\+\+|c89|c99|cpp|gcc|g\+\+|clang|clang\+\+|tcc)(-[\d.]+)?$|^ld(\.bfd|\.gold|\.lld)?$")
LIBUV_FILE = re.compile(r"^libuv(\.|_a\.)")

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="wheels with $ORIGIN rpath: Linux only"),
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="hiding the system libuv needs root (a mount namespace)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) (util-linux)"),
    pytest.mark.timeout(600),
]


def run(cmd, check=True, **kw):
    """Run ``cmd``; return the CompletedProcess (output merged), failing with it on error."""
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if check and res.returncode != 0:
        command = shlex.join(map(str, cmd))[-3000:]
        pytest.fail(f"{command}\nexited {res.returncode}:\n{res.stdout[-6000:]}")
    return res


def clean_env(**extra):
    """The environment without anything that could point the loader or Python elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def copy_tree(dst):
    """The working tree as it is (uncommitted changes included), without builds and venvs."""
    def ignore(d, names):
        rel = os.path.relpath(d, ROOT)
        skip = {
            n for n in names if n in ("__pycache__", ".git") or n.endswith((".so", ".o", ".pyc"))
        }
        if rel == ".":
            skip |= {n for n in names if n.startswith((".venv", ".tree-", ".bench", ".pytest"))
                     or n in ("build", "dist", "bench-results") or n.endswith(".egg-info")}
        if rel == os.path.join("vendor", "libuv"):
            skip.add("build")
        return skip
    shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel): `python -m build` on a copy of the tree, the wheel built from the sdist."""
    try:
        import build  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(
            "the 'build' package is not installed in this venv (tools/setup.sh installs it)"
        )
    base = tmp_path_factory.mktemp("wheel")
    copy_tree(base / "src")
    # --no-isolation: build with this venv's setuptools and cffi (PyPy's cffi is built in).
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", base / "dist", base / "src"],
        env=clean_env(), cwd=base)
    sdists = list((base / "dist").glob("uvcffi-*.tar.gz"))
    wheels = list((base / "dist").glob("uvcffi-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(base / "dist")
    return sdists[0], wheels[0]


CHECK = r"""
import asyncio, ctypes, json, shutil, sys, sysconfig
out = {}
try:
    ctypes.CDLL("libuv.so.1")
    out["system_libuv"] = "loadable"
except OSError as exc:
    out["system_libuv"] = str(exc)
cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
out["compilers"] = {n: shutil.which(n) for n in {"cc", "gcc", "c++", "g++", "clang", "ld", cc}}

import uvcffi

async def main():
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    writer.write(b"ping" * 1000)
    writer.write_eof()
    got = await reader.read()
    writer.close()
    server.close()
    await server.wait_closed()
    return len(got), type(asyncio.get_running_loop()).__module__

out["echoed"], out["loop_module"] = uvcffi.run(main())
out["uvcffi"] = uvcffi.__file__
out["libuv_version"] = uvcffi.libuv_version()
out["libuv_maps"] = sorted({l.split()[-1] for l in open("/proc/self/maps") if "libuv" in l})
print("RESULT " + json.dumps(out))
"""


def whiteouts():
    """{directory: [names]} of the libuv files the loader and pkg-config know, and of the
    compilers and linkers on PATH: what the namespace hides."""
    hide = {}

    def add(d, pattern):
        d = os.path.realpath(d)
        if os.path.isdir(d):
            names = [n for n in os.listdir(d) if pattern.search(n)]
            if names:
                hide.setdefault(d, set()).update(names)

    # Where the loader finds libuv.so.1 now, every copy ldconfig's cache lists, pkg-config's.
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes; ctypes.CDLL('libuv.so.1');"
         "print('\\n'.join(l.split()[-1] for l in open('/proc/self/maps') if 'libuv' in l))"],
        capture_output=True, text=True, env=clean_env())
    paths = probe.stdout.split()
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if os.path.exists(ldconfig):
        cache = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
        paths += re.findall(r"^\s*libuv\S* .*=> (\S+)$", cache, re.M)
    if shutil.which("pkg-config"):
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "libuv"],
                                capture_output=True, text=True)
        paths += [os.path.join(libdir.stdout.strip(), "libuv.so")] if libdir.returncode == 0 else []
    for p in paths:
        add(os.path.dirname(p), LIBUV_FILE)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d:
            add(d, COMPILER)
    return {d: sorted(names) for d, names in hide.items()}


def in_namespace(tmp, hide, *commands):
    """Run ``commands`` (argv lists, in order) in a new mount namespace where each directory
    of ``hide`` is overlaid with whiteouts of its names: they do not exist there."""
    lines = ["set -eu", f"mount -t tmpfs uvcffi-test {shlex.quote(str(tmp))}"]
    for i, (d, names) in enumerate(sorted(hide.items())):
        up, work = shlex.quote(f"{tmp}/up{i}"), shlex.quote(f"{tmp}/work{i}")
        lines.append(f"mkdir {up} {work}")
        lines += [f"mknod {up}/{shlex.quote(n)} c 0 0" for n in names]
        lines.append(f"mount -t overlay overlay -o lowerdir={d},upperdir={up},workdir={work} "
                     f"{shlex.quote(d)}")
    lines += [shlex.join(map(str, c)) for c in commands]
    tmp.mkdir()
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)],
               env=clean_env(), cwd=tmp.parent)


def test_wheel_carries_libuv(dists):
    sdist, wheel = dists
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert "uvcffi/libuv.so.1" in names
    assert any(re.match(r"uvcffi/_uv\..*so$", n) for n in names), names
    tag = "cp" if sys.implementation.name == "cpython" else "pp"
    assert re.match(rf"uvcffi-[^-]+-{tag}{sys.version_info[0]}{sys.version_info[1]}-", wheel.name)
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {
        "build_ffi.py",
        "setup.py",
        "MANIFEST.in",
        "csrc/uvc_core.h",
        "vendor/build.sh",
    } <= members


def test_wheel_carries_type_information(dists):
    """PEP 561: the py.typed marker, and the stubs of the two extension modules."""
    _, wheel = dists
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    assert {"uvcffi/py.typed", "uvcffi/_uv.pyi", "uvcffi/_accel.pyi"} <= names, sorted(names)


def test_wheel_runs_without_system_libuv_or_compiler(dists, tmp_path):
    _, wheel = dists
    hide = whiteouts()  # none of libuv on a machine without it: the dlopen check still holds
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], env=clean_env())
    (tmp_path / "check.py").write_text(CHECK)
    py = venv / "bin" / "python"
    res = in_namespace(
        tmp_path / "ns", hide,
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--only-binary", ":all:", wheel],
        [py, "-I", tmp_path / "check.py"],
    )
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, res.stdout[-6000:]
    out = json.loads(line[-1][len("RESULT "):])
    package = os.path.dirname(out["uvcffi"])

    assert "cannot open shared object file" in out["system_libuv"], out
    assert out["compilers"] == {n: None for n in out["compilers"]}, out
    assert out["echoed"] == 4000 and out["loop_module"].startswith("uvcffi"), out
    assert package.startswith(str(venv) + os.sep), out
    assert package.endswith(os.sep + os.path.join("site-packages", "uvcffi")), out
    assert out["libuv_maps"] == [os.path.join(package, "libuv.so.1")], out
    assert out["libuv_version"] == built_against(), out


def built_against():
    """The version of the libuv the build used: vendor/libuv's when there is one, else the
    system's (pkg-config)."""
    header = os.path.join(ROOT, "vendor", "libuv", "include", "uv", "version.h")
    if os.path.exists(header):
        with open(header) as f:
            v = dict(re.findall(r"#define UV_VERSION_(MAJOR|MINOR|PATCH) (\d+)", f.read()))
        return f"{v['MAJOR']}.{v['MINOR']}.{v['PATCH']}"
    return run(["pkg-config", "--modversion", "libuv"]).stdout.strip()


def test_sdist_without_libuv_stops_with_the_message(dists, tmp_path):
    """Built from the sdist with no vendor/libuv tree and pkg-config finding no libuv."""
    sdist, _ = dists
    shutil.unpack_archive(sdist, tmp_path)
    (src,) = tmp_path.iterdir()
    shutil.rmtree(src / "vendor" / "libuv", ignore_errors=True)
    (tmp_path / "no-pc").mkdir()
    env = clean_env(PKG_CONFIG_LIBDIR=str(tmp_path / "no-pc"))
    env.pop("PKG_CONFIG_PATH", None)
    res = run([sys.executable, "-m", "build", "--no-isolation", "--wheel",
               "--outdir", tmp_path / "dist", src], check=False, cwd=tmp_path, env=env)
    assert res.returncode != 0, res.stdout
    assert res.stdout.count(MISSING_LIBUV) == 1, res.stdout
    assert "Traceback" not in res.stdout, res.stdout
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").glob("*.whl"))

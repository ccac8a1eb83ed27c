"""The built wheel is a working airlock: templates/, migrations/ and the portal's static
assets come along, and nothing reaches back into the checkout.

The wheel is built from a copy of the sources (pip builds in-tree and would write
build/ into the checkout), installed into a fresh virtualenv in tmp_path, and run from
there with no PYTHONPATH. The virtualenv borrows this interpreter's installed
dependencies through a .pth line (no network, no second copy of mitmproxy); a path
line in a .pth does not run the editable-install hook that lives beside them, so
`app` can only come from the wheel, which the test checks.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import httpx

CHECKOUT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in", "app", "addons", "templates", "migrations")


def _copy_sources(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "node_modules")
    dest.mkdir()
    for name in SOURCES:
        src = CHECKOUT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{args[:4]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    # Nothing of the test run may leak in: no PYTHONPATH (it points at the checkout), no
    # AIRLOCK_* of other suites.
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")}
    return {**keep, "PYTHONUNBUFFERED": "1", **extra}


def test_the_wheel_carries_templates_and_static_files_and_serves_the_login_page(tmp_path: Path) -> None:
    src = _copy_sources(tmp_path / "src")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
          "-w", str(dist), str(src)])
    wheels = list(dist.glob("airlock-*.whl"))
    assert len(wheels) == 1, wheels

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     env=_clean_env()).stdout.strip())
    borrowed = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "_borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", str(wheels[0])])

    run_dir = tmp_path / "elsewhere"  # neither the checkout nor the source copy
    run_dir.mkdir()
    port = _free_port()
    env = _clean_env(AIRLOCK_HOME=str(tmp_path / "home"), AIRLOCK_PORTAL_PORT=str(port))
    where = _run([str(py), "-c", "import app.paths as p; print(p.TEMPLATES); print(p.MIGRATIONS)"],
                 cwd=run_dir, env=env).stdout.split()
    assert [Path(w) for w in where] == [site / "app" / "portal" / "templates", site / "app" / "migrations"]

    airlock = str(env_dir / "bin" / "airlock")
    init = _run([airlock, "init"], cwd=run_dir, env=env)
    assert "admin@localhost" in init.stdout + init.stderr
    assert (tmp_path / "home" / "airlock.db").is_file()

    portal = subprocess.Popen([airlock, "portal"], cwd=run_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert portal.poll() is None, f"the portal exited:\n{portal.stdout.read()}"
            try:
                page = httpx.get(f"{base}/login", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the portal did not answer within 60 s"
                time.sleep(0.2)
        assert page.status_code == 200
        assert "<title>Sign in · airlock</title>" in page.text
        assert 'name="csrf_token"' in page.text and 'id="password"' in page.text
        for name, content_type, sample in (("portal.css", "text/css", ".login"), ("portal.js", "javascript", "")):
            asset = httpx.get(f"{base}/static/{name}", timeout=5)
            assert asset.status_code == 200 and content_type in asset.headers["content-type"]
            assert asset.content == (CHECKOUT / "app" / "portal" / "static" / name).read_bytes()
            assert sample in asset.text
    finally:
        os.killpg(portal.pid, signal.SIGTERM)
        try:
            portal.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(portal.pid, signal.SIGKILL)
            portal.wait()

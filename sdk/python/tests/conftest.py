"""A real clawdspaced for the SDK tests (as scripts/test-daemon.sh does):
built with cargo, a busybox image in a private state dir, its own port,
key, cgroup parent, bridge and subnet. Everything is stopped and removed at
the end of the session, also when tests fail.

Needs root (real spaces). CLAWDSPACE_SDK_NO_BUILD=1 skips the cargo build.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "sdk" / "python" / "src"))

import clawdspace  # noqa: E402
from clawdspace import Clawdspace  # noqa: E402


@dataclass
class Daemon:
    url: str
    key: str
    state: Path
    #: (method, path) of every HTTP request the test clients sent.
    requests: List[Tuple[str, str]] = field(default_factory=list)
    #: URLs of every WebSocket the SDK opened.
    websockets: List[str] = field(default_factory=list)
    #: The daemon's log (with a line per request: method and path).
    log: Optional[Path] = None

    def record(self, request: httpx.Request) -> None:
        self.requests.append((request.method, request.url.path))

    async def arecord(self, request: httpx.Request) -> None:
        self.record(request)

    def client(self, **kw) -> Clawdspace:
        return Clawdspace(self.url, self.key, event_hooks={"request": [self.record]}, **kw)

    def aclient(self, **kw) -> clawdspace.AsyncClawdspace:
        return clawdspace.AsyncClawdspace(
            self.url, self.key, event_hooks={"request": [self.arecord]}, **kw
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    return str(REPO / "target" / "debug" / name)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root and real containers: run as root")
    with running_daemon() as d:
        yield d


@contextlib.contextmanager
def running_daemon(key: str = "", extra_env: Optional[dict] = None) -> Iterator[Daemon]:
    """Starts a daemon (with `key`, else a random one, and `extra_env`);
    stops it and removes everything it made on exit."""
    if os.environ.get("CLAWDSPACE_SDK_NO_BUILD") != "1":
        subprocess.run(
            ["cargo", "build", "-q", "-p", "clawdspace-api", "-p", "clawdspace-runtime",
             "--bin", "clawdspaced", "--bin", "clawdspace-runtime"],
            cwd=REPO, check=True,
        )
    tag = secrets.token_hex(4)
    top = Path(tempfile.mkdtemp(prefix="clawdspace-sdktest.", dir="/var/tmp"))
    state = top / "state"
    cgroup = f"/clawdspace-sdktest-{tag}"
    b = bytes.fromhex(tag)
    env = dict(
        os.environ,
        CLAWDSPACE_STATE_DIR=str(state),
        CLAWDSPACE_CGROUP_PARENT=cgroup,
    )
    proc = None
    key = key or f"sdk-key-{tag}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        subprocess.run(
            [_bin("clawdspace-runtime"), "import-busybox", "busybox:latest"],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )
        env.update(
            PORT=str(port),
            API_KEY=key,
            CLAWDSPACE_IMAGE="busybox:latest",
            CLAWDSPACE_BRIDGE=f"cst{tag}",
            CLAWDSPACE_SUBNET=f"10.{100 + b[0] % 100}.{b[1]}.0/24",
            CLAWDSPACE_NETWORK_LINGER_MS="0",
            CLAWDSPACE_DOCKER_MIRROR="127.0.0.1:1",
            CLAWDSPACE_WORKERS="2",
            # Requests are logged: test_mcp checks the paths its clients used.
            CLAWDSPACE_LOG="warn,clawdspace_api::request=info",
            # A policy for /mcp that test_mcp checks.
            CLAWDSPACE_MCP_DENY="mcp-denied-*",
            CLAWDSPACE_CDI_DIRS="",
            CLAWDSPACE_NVIDIA_HOOK="",
            CLAWDSPACE_NVIDIA_DRIVER_ROOT="",
        )
        env.update(extra_env or {})
        log = open(top / "daemon.log", "wb")
        proc = subprocess.Popen(
            [_bin("clawdspaced")], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        end = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(
                    "test daemon did not come up: " + (top / "daemon.log").read_text()[-2000:]
                )
            time.sleep(0.1)
        yield Daemon(url=url, key=key, state=state, log=top / "daemon.log")
    finally:
        _cleanup(proc, url, key, env, top, cgroup)


def _cleanup(proc, url, key, env, top: Path, cgroup: str) -> None:
    if proc is not None and proc.poll() is None:
        try:
            h = {"Authorization": f"Bearer {key}"}
            for s in httpx.get(url + "/api/spaces", headers=h, timeout=10).json()["spaces"]:
                httpx.delete(f"{url}/api/spaces/{s['name']}", headers=h, timeout=60)
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Whatever the daemon left (processes, network, mounts, cgroups).
    if (top / "state").is_dir():
        subprocess.run([_bin("clawdspace-runtime"), "purge"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for d in Path("/sys/fs/cgroup").glob("*" + cgroup):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        Path("/sys/fs/cgroup" + cgroup).rmdir()
    except OSError:
        pass
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(autouse=True)
def _record_websockets(daemon_if_used, monkeypatch):
    """Records the URL of every WebSocket the SDK opens (checked against OpenAPI)."""
    if daemon_if_used is None:
        yield
        return
    import clawdspace.aio as aio
    import clawdspace.client as sync

    real_sync, real_async = sync.ws_connect, aio.ws_connect

    def rec_sync(url, *a, **kw):
        daemon_if_used.websockets.append(url)
        return real_sync(url, *a, **kw)

    def rec_async(url, *a, **kw):
        daemon_if_used.websockets.append(url)
        return real_async(url, *a, **kw)

    monkeypatch.setattr(sync, "ws_connect", rec_sync)
    monkeypatch.setattr(aio, "ws_connect", rec_async)
    yield


@pytest.fixture
def daemon_if_used(request):
    """The session daemon when the test uses it, else None (pure tests start nothing)."""
    if "daemon" in request.fixturenames:
        return request.getfixturevalue("daemon")
    return None


@pytest.fixture(scope="session")
def client(daemon: Daemon) -> Iterator[Clawdspace]:
    with daemon.client() as c:
        yield c


def unique(prefix: str = "sdk") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def space(daemon: Daemon) -> Iterator[clawdspace.Space]:
    """One space shared by a module's tests (network none: fast)."""
    with daemon.client() as c:
        s = c.create(unique("mod"), memory="256m", network="none")
        try:
            yield s
        finally:
            try:
                s.destroy()
            except clawdspace.NotFound:
                pass


def has_path(daemon: Daemon, path: str) -> bool:
    doc = httpx.get(daemon.url + "/api/openapi.json", timeout=10).json()
    return path in doc.get("paths", {})

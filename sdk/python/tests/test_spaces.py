"""Spaces, exec and errors against a real daemon (sync client)."""

import time

import pytest

import clawdspace
from clawdspace import (
    Clawdspace,
    CommandFailed,
    Conflict,
    InvalidInput,
    NotFound,
    Unauthorized,
)

from conftest import unique


def test_server_info(client: Clawdspace):
    assert client.health()["status"] == "ok"
    assert client.system()["platform"] == "linux"
    assert "gpu" in client.capabilities()
    assert "/api/spaces" in client.openapi()["paths"]


def test_create_get_list_destroy(client: Clawdspace):
    name = unique()
    s = client.create(name, memory="256m", cpus=0.5, network="none")
    try:
        assert (s.name, s.status, s.memory, s.cpus, s.network) == (
            name, "running", 256 << 20, 0.5, "none")
        assert len(s.id) == 12
        got = client.get(name)
        assert got.id == s.id and got.image == "busybox:latest"
        assert name in [x.name for x in client.list()]
    finally:
        s.destroy()
    with pytest.raises(NotFound):
        client.get(name)
    assert name not in [x.name for x in client.list()]


def test_memory_in_bytes_and_default_network(client: Clawdspace):
    with client.create(unique(), memory=300 << 20) as s:
        assert s.memory == 300 << 20
        assert s.network == "internet" and s.ip_address


def test_context_manager_destroys_even_on_error(client: Clawdspace):
    name = unique()
    with pytest.raises(RuntimeError):
        with client.create(name, network="none") as s:
            assert s.exec("true").ok
            raise RuntimeError("boom")
    with pytest.raises(NotFound):
        client.get(name)


def test_exec_result(space: clawdspace.Space):
    r = space.exec("echo out; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code, r.ok) == ("out", "err", 3, False)
    r = space.exec(["echo", "$HOME"])
    assert r.stdout == "$HOME" and r.ok
    r = space.exec("pwd; echo $FOO; id -un; cat", cwd="/tmp", env={"FOO": "bar"},
                   user="root", stdin="hello stdin")
    assert r.stdout == "/tmp\nbar\nroot\nhello stdin"


def test_exec_check_raises_only_when_asked(space: clawdspace.Space):
    assert space.exec("exit 5").exit_code == 5
    with pytest.raises(CommandFailed) as e:
        space.exec("echo nope >&2; exit 5", check=True)
    assert e.value.result.exit_code == 5 and "nope" in str(e.value)
    assert space.exec("true", check=True).ok


def test_exec_timeout(space: clawdspace.Space):
    t = time.monotonic()
    r = space.exec("echo before; sleep 10; echo after", timeout=0.5)
    assert r.timed_out and r.exit_code == 137 and r.stdout == "before"
    assert time.monotonic() - t < 8


def test_pause_resume_stats(client: Clawdspace, space: clawdspace.Space):
    space.pause()
    assert space.status == "paused"
    assert client.get(space.name).status == "paused"
    space.resume()
    assert space.status == "running"
    st = space.stats()
    assert st["memoryLimitBytes"] == 256 << 20 and st["pids"] >= 1
    # exec wakes a paused space
    space.pause()
    assert space.exec("echo awake").stdout == "awake"
    assert space.refresh().status == "running"


def test_errors_map_to_exceptions(daemon, client: Clawdspace, space: clawdspace.Space):
    with pytest.raises(NotFound) as e:
        client.get("no-such-space")
    assert e.value.status == 404 and e.value.message == "Space not found"
    with pytest.raises(Conflict, match="Space already exists"):
        client.create(space.name)
    with pytest.raises(InvalidInput, match="Invalid name"):
        client.create("bad name!")
    with pytest.raises(InvalidInput, match="Invalid memory"):
        client.create(unique(), memory="1k")
    with pytest.raises(InvalidInput, match="Command required"):
        space.exec("")
    with pytest.raises(InvalidInput, match="cwd must be an absolute path"):
        space.exec("ls", cwd="tmp")
    with Clawdspace(daemon.url, "wrong-key") as bad:
        with pytest.raises(Unauthorized):
            bad.list()
        with pytest.raises(Unauthorized):
            bad.get(space.name).exec("true")
    with pytest.raises(NotFound):
        client.get(unique()).destroy()
    assert all(issubclass(c, clawdspace.ClawdspaceError)
               for c in (NotFound, Conflict, InvalidInput, Unauthorized, CommandFailed))


def test_connection_failure_is_a_clawdspace_error():
    with Clawdspace("http://127.0.0.1:1", "k") as c:
        with pytest.raises(clawdspace.ConnectionFailed):
            c.list()

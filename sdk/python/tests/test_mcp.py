"""The MCP server, driven by the official `mcp` client (PyPI) over both
transports: `clawdspace mcp` (stdio, the built CLI with its configuration
pointing at the test daemon) and the daemon's own `/mcp` (streamable HTTP).

Both are thin clients of the REST API: the last test reads the daemon's
request log and fails on any path the OpenAPI document lacks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from pathlib import Path
from typing import AsyncIterator, List

import httpx
import pytest

mcp = pytest.importorskip("mcp", reason="pip install mcp (scripts/install-deps)")
import httpx2  # noqa: E402  (the mcp package's HTTP client)
import jsonschema  # noqa: E402
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from conftest import REPO, Daemon, has_path, unique  # noqa: E402

KINDS = ["stdio", "http"]
DENIED = "mcp-denied-*"  # the daemon's CLAWDSPACE_MCP_DENY (conftest), and --deny here

COMMON_TOOLS = {
    "list_servers", "list_spaces", "create_space", "get_space", "destroy_space",
    "pause_space", "resume_space", "exec", "run_code", "read_file", "write_file",
    "list_files", "list_templates", "get_template", "save_template", "system_status",
}
LOCAL_TOOLS = {"upload_file", "download_file"}


@pytest.fixture(scope="module")
def cli_binary() -> str:
    if os.environ.get("CLAWDSPACE_SDK_NO_BUILD") != "1":
        subprocess.run(["cargo", "build", "-q", "-p", "clawdspace-cli", "--bin", "clawdspace"],
                       cwd=REPO, check=True)
    return str(REPO / "target" / "debug" / "clawdspace")


@pytest.fixture(scope="module")
def log_start(daemon: Daemon) -> int:
    """Where the daemon's log stood before this module's first test."""
    return daemon.log.stat().st_size if daemon.log else 0


@contextlib.asynccontextmanager
async def session(kind: str, daemon: Daemon, cli: str, home: Path) -> AsyncIterator[ClientSession]:
    if kind == "stdio":
        params = StdioServerParameters(
            command=cli,
            args=["mcp", "--deny", DENIED],
            env={
                "HOME": str(home),  # no ~/.clawdspace, a private server cache
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "CLAWDSPACE_HOSTS": daemon.url,
                "CLAWDSPACE_KEY": daemon.key,
                "NO_COLOR": "1",
            },
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                s.cs_init = await s.initialize()
                yield s
    else:
        headers = {"Authorization": f"Bearer {daemon.key}"}
        timeout = httpx2.Timeout(30, read=300)
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
            async with streamable_http_client(daemon.url + "/mcp", http_client=http) as (read, write):
                async with ClientSession(read, write) as s:
                    s.cs_init = await s.initialize()
                    yield s


def run(kind, daemon, cli, home, body):
    """Runs `body(session)` in a fresh MCP session."""

    async def main():
        async with session(kind, daemon, cli, home) as s:
            return await body(s)

    return asyncio.run(main())


# mcp 2 names fields in snake_case (1.x: camelCase); both work here.
def is_error(result) -> bool:
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


def structured(result):
    v = getattr(result, "structured_content", None)
    return v if v is not None else getattr(result, "structuredContent", None)


def input_schema(tool) -> dict:
    v = getattr(tool, "input_schema", None)
    return v if v is not None else input_schema(tool)


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def ok(result) -> dict:
    assert not is_error(result), text(result)
    assert isinstance(structured(result), dict), result
    return structured(result)


def destroy_quietly(daemon: Daemon, name: str) -> None:
    h = {"Authorization": f"Bearer {daemon.key}"}
    httpx.delete(f"{daemon.url}/api/spaces/{name}?removeVolume=true", headers=h, timeout=60)


@pytest.mark.parametrize("kind", KINDS)
def test_initialize_and_tool_schemas(kind, daemon, cli_binary, tmp_path, log_start):
    async def body(s: ClientSession):
        tools = (await s.list_tools()).tools
        return s.cs_init, tools

    init, tools = run(kind, daemon, cli_binary, tmp_path, body)
    info = getattr(init, "server_info", None) or init.serverInfo
    assert info.name == "clawdspace"
    assert "create_space" in (init.instructions or "")
    names = {t.name for t in tools}
    expected = COMMON_TOOLS | (LOCAL_TOOLS if kind == "stdio" else set())
    assert names == expected
    for t in tools:
        assert t.description and len(t.description) > 20, t.name
        schema = input_schema(t)
        assert schema["type"] == "object", t.name
        jsonschema.validators.validator_for(schema).check_schema(schema)
        for prop, spec in schema.get("properties", {}).items():
            assert spec.get("description"), f"{t.name}.{prop} has no description"
    exec_tool = next(t for t in tools if t.name == "exec")
    props = input_schema(exec_tool)["properties"]
    for k in ("name", "command", "cwd", "env", "user", "timeoutSeconds"):
        assert k in props
    assert set(input_schema(exec_tool)["required"]) == {"name", "command"}
    # The schema validates what the tool takes and refuses what it refuses.
    v = jsonschema.validators.validator_for(input_schema(exec_tool))(input_schema(exec_tool))
    assert v.is_valid({"name": "a", "command": ["ls", "-l"], "timeoutSeconds": 5})
    assert not v.is_valid({"name": "a"})
    assert not v.is_valid({"name": "a", "command": "x", "bogus": 1})


@pytest.mark.parametrize("kind", KINDS)
def test_create_exec_files_destroy(kind, daemon, cli_binary, tmp_path, log_start):
    name = unique(f"mcp-{kind}")

    async def body(s: ClientSession):
        servers = ok(await s.call_tool("list_servers", {}))["servers"]
        assert servers and servers[0]["name"]
        created = ok(await s.call_tool(
            "create_space", {"name": name, "memory": "256m", "network": "none", "env": {"GREETING": "hi"}}))
        assert created["space"]["name"] == name and created["space"]["status"] == "running"
        listed = ok(await s.call_tool("list_spaces", {}))["spaces"]
        assert [x["name"] for x in listed].count(name) == 1

        r = ok(await s.call_tool("exec", {"name": name, "command": "echo $GREETING; echo oops >&2; pwd",
                                          "cwd": "/tmp", "env": {"X": "1"}}))
        assert r["exitCode"] == 0 and r["stdout"] == "hi\n/tmp" and r["stderr"] == "oops"
        assert r["stdoutTruncated"] is False and r["stderrTruncated"] is False and r["timedOut"] is False
        r = ok(await s.call_tool("exec", {"name": name, "command": ["id", "-u"], "user": "root"}))
        assert r["stdout"] == "0"

        # A failing command is a result with its exit code, not an error.
        res = await s.call_tool("exec", {"name": name, "command": "echo bad >&2; exit 3"})
        assert not is_error(res)
        assert structured(res)["exitCode"] == 3 and structured(res)["stderr"] == "bad"
        r = ok(await s.call_tool("exec", {"name": name, "command": "echo a; sleep 5; echo b",
                                          "timeoutSeconds": 1}))
        assert r["timedOut"] is True and r["exitCode"] == 137 and r["stdout"] == "a"

        content = "line one\nünïcode\n"
        w = ok(await s.call_tool("write_file", {"name": name, "path": "/workspace/dir/a.txt",
                                                "content": content}))
        assert w["bytesWritten"] == len(content.encode())
        rd = ok(await s.call_tool("read_file", {"name": name, "path": "/workspace/dir/a.txt"}))
        assert rd["content"] == content and rd["encoding"] == "utf-8" and rd["truncated"] is False
        part = ok(await s.call_tool("read_file", {"name": name, "path": "/workspace/dir/a.txt",
                                                  "maxBytes": 4}))
        assert part["content"] == "line" and part["truncated"] is True and part["size"] == len(content.encode())
        ok(await s.call_tool("write_file", {"name": name, "path": "/tmp/bin", "content": "AAEC/w==",
                                            "encoding": "base64", "mode": "0600"}))
        rd = ok(await s.call_tool("read_file", {"name": name, "path": "/tmp/bin"}))
        assert rd["encoding"] == "base64" and rd["content"] == "AAEC/w=="
        ok(await s.call_tool("write_file", {"name": name, "path": "/tmp/empty", "content": ""}))
        assert ok(await s.call_tool("read_file", {"name": name, "path": "/tmp/empty"}))["content"] == ""
        ls = ok(await s.call_tool("list_files", {"name": name, "path": "/workspace/dir"}))
        assert [e["name"] for e in ls["entries"]] == ["a.txt"]
        missing = await s.call_tool("read_file", {"name": name, "path": "/nope"})
        assert is_error(missing) and "404" in text(missing)

        rc = ok(await s.call_tool("run_code", {"name": name, "language": "sh",
                                               "code": "echo from-sh; exit 4"}))
        assert rc["stdout"] == "from-sh" and rc["exitCode"] == 4
        # The image has no python3: a result that says so, not an error.
        rc = await s.call_tool("run_code", {"name": name, "language": "python", "code": "print(1)"})
        assert not is_error(rc) and structured(rc)["exitCode"] == 127

        paused = ok(await s.call_tool("pause_space", {"name": name}))
        assert paused["space"]["status"] == "paused"
        resumed = ok(await s.call_tool("resume_space", {"name": name}))
        assert resumed["space"]["status"] == "running"
        st = ok(await s.call_tool("system_status", {}))
        assert st["system"]["cpus"] >= 1 and "gpu" in st["capabilities"]

        ok(await s.call_tool("destroy_space", {"name": name, "removeVolume": True}))
        gone = await s.call_tool("get_space", {"name": name})
        assert is_error(gone) and "not found" in text(gone)
        again = await s.call_tool("destroy_space", {"name": name})
        assert is_error(again) and "not found" in text(again)

    try:
        run(kind, daemon, cli_binary, tmp_path, body)
    finally:
        destroy_quietly(daemon, name)


@pytest.mark.parametrize("kind", KINDS)
def test_long_exec_streams_progress(kind, daemon, cli_binary, tmp_path, space, log_start):
    notes: List[tuple] = []

    async def on_progress(progress, total, message):
        notes.append((progress, message))

    async def body(s: ClientSession):
        return await s.call_tool(
            "exec",
            {"name": space.name, "command": "for i in 1 2 3 4; do echo step$i; sleep 0.4; done; echo done >&2"},
            progress_callback=on_progress,
        )

    res = run(kind, daemon, cli_binary, tmp_path, body)
    r = ok(res)
    assert r["stdout"] == "step1\nstep2\nstep3\nstep4" and r["stderr"] == "done" and r["exitCode"] == 0
    assert len(notes) >= 2, notes
    assert any(m and m.startswith("step") for _, m in notes), notes
    values = [p for p, _ in notes]
    assert values == sorted(values) and len(set(values)) == len(values)


@pytest.mark.parametrize("kind", KINDS)
def test_denied_space_is_refused(kind, daemon, cli_binary, tmp_path, log_start):
    name = unique("mcp-denied")

    async def body(s: ClientSession):
        out = []
        for tool, args in [("create_space", {"name": name}), ("exec", {"name": name, "command": "true"}),
                           ("destroy_space", {"name": name})]:
            out.append(await s.call_tool(tool, args))
        return out

    try:
        results = run(kind, daemon, cli_binary, tmp_path, body)
        for res in results:
            assert is_error(res)
            assert f"space '{name}' is not allowed in this MCP session" in text(res)
            assert DENIED in text(res)
        h = {"Authorization": f"Bearer {daemon.key}"}
        assert httpx.get(f"{daemon.url}/api/spaces/{name}", headers=h).status_code == 404
    finally:
        destroy_quietly(daemon, name)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arguments_are_readable_tool_errors(kind, daemon, cli_binary, tmp_path, log_start):
    async def body(s: ClientSession):
        return [
            await s.call_tool("exec", {"name": "x"}),
            await s.call_tool("exec", {"name": "x", "command": 5}),
            await s.call_tool("create_space", {"name": "x", "memry": "1g"}),
            await s.call_tool("create_space", {"name": "bad name!"}),
            await s.call_tool("read_file", {"name": "x", "path": "/a", "maxBytes": "lots"}),
        ]

    r = run(kind, daemon, cli_binary, tmp_path, body)
    assert all(is_error(x) for x in r)
    assert "missing field `command`" in text(r[0])
    assert "a string (run by sh -c) or a non-empty array of strings" in text(r[1])
    assert "unknown field `memry`" in text(r[2])
    # Checked by the API: its own message comes back.
    assert "Invalid name" in text(r[3])
    assert "Invalid arguments for read_file" in text(r[4])


def test_upload_and_download_over_stdio(daemon, cli_binary, tmp_path, space, log_start):
    src = tmp_path / "up.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    dst = tmp_path / "down.bin"

    async def body(s: ClientSession):
        up = ok(await s.call_tool("upload_file", {"name": space.name, "localPath": str(src),
                                                  "path": "/workspace/up.bin"}))
        assert up["bytes"] == len(data)
        r = ok(await s.call_tool("exec", {"name": space.name, "command": "wc -c < /workspace/up.bin"}))
        assert r["stdout"] == str(len(data))
        down = ok(await s.call_tool("download_file", {"name": space.name, "path": "/workspace/up.bin",
                                                      "localPath": str(dst)}))
        assert down["bytes"] == len(data)
        exists = await s.call_tool("download_file", {"name": space.name, "path": "/workspace/up.bin",
                                                     "localPath": str(dst)})
        assert is_error(exists) and "exists" in text(exists)
        rel = await s.call_tool("upload_file", {"name": space.name, "localPath": "up.bin", "path": "/x"})
        assert is_error(rel) and "absolute" in text(rel)

    run("stdio", daemon, cli_binary, tmp_path, body)
    assert dst.read_bytes() == data


@pytest.mark.parametrize("kind", KINDS)
def test_templates(kind, daemon, cli_binary, tmp_path, log_start):
    if not has_path(daemon, "/api/templates"):
        pytest.skip("this daemon has no templates API yet (/api/templates not in its OpenAPI document)")

    async def body(s: ClientSession):
        listed = ok(await s.call_tool("list_templates", {}))
        names = [t["name"] for t in listed["templates"]]
        assert "default" in names
        got = ok(await s.call_tool("get_template", {"name": "default"}))
        assert "yaml" in got
        missing = await s.call_tool("get_template", {"name": "no-such-template"})
        assert is_error(missing) and "Template not found" in text(missing)

    run(kind, daemon, cli_binary, tmp_path, body)


def test_http_reaches_the_fleet_through_the_relay(daemon, cli_binary, tmp_path, log_start):
    """A daemon whose fleet has a second node: /mcp lists it, creates and
    runs there (progress over the relayed WebSocket) through the relay."""
    import time

    from conftest import running_daemon

    with running_daemon(key=daemon.key) as b:
        fleet_env = {"CLAWDSPACE_NODE_NAME": "alpha", "CLAWDSPACE_NODES": f"beta={b.url}"}
        with running_daemon(key=daemon.key, extra_env=fleet_env) as a:
            h = {"Authorization": f"Bearer {a.key}"}
            end = time.monotonic() + 20
            while time.monotonic() < end:
                nodes = httpx.get(a.url + "/api/nodes", headers=h).json()["nodes"]
                if any(n["name"] == "beta" and n["status"] == "online" for n in nodes):
                    break
                time.sleep(0.2)
            name = unique("mcp-fleet")
            notes = []

            async def on_progress(progress, total, message):
                notes.append(message)

            async def body(s: ClientSession):
                servers = ok(await s.call_tool("list_servers", {}))["servers"]
                assert {(x["name"], x["online"]) for x in servers} == {("alpha", True), ("beta", True)}
                assert servers[0]["name"] == "alpha"
                made = ok(await s.call_tool("create_space", {"name": name, "server": "beta",
                                                             "memory": "256m", "network": "none"}))
                assert made["server"] == "beta"
                # Found on beta without being told.
                r = await s.call_tool("exec", {"name": name, "command": "hostname; sleep 0.6; echo two"},
                                      progress_callback=on_progress)
                assert ok(r)["stdout"] == f"{name}\ntwo"
                spaces = ok(await s.call_tool("list_spaces", {}))["spaces"]
                assert [x["server"] for x in spaces if x["name"] == name] == ["beta"]
                ok(await s.call_tool("destroy_space", {"name": name, "removeVolume": True}))

            try:
                run("http", a, cli_binary, tmp_path, body)
                assert notes and any(m == name for m in notes), notes
                assert httpx.get(f"{b.url}/api/spaces/{name}", headers=h).status_code == 404
            finally:
                destroy_quietly(b, name)


def test_http_endpoint_needs_the_key(daemon):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    r = httpx.post(daemon.url + "/mcp", json=init, headers=headers)
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    r = httpx.post(daemon.url + "/mcp", json=init, headers={**headers, "Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = httpx.post(daemon.url + f"/mcp?key={daemon.key}", json=init, headers=headers)
    assert r.status_code == 200, r.text


def _documented(doc):
    routes = []
    for template, ops in doc["paths"].items():
        rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "/?$")
        routes.append((rx, {m.upper() for m in ops}))
    ws = "/api/spaces/{name}/exec/ws"
    ws_named = ws in doc["info"]["description"]

    def documented(method, path):
        if (method, path) == ("GET", "/api/openapi.json"):
            return True  # the document itself (the templates test asks it)
        if method == "GET" and ws_named and re.match(r"^/api/spaces/[^/]+/exec/ws$", path):
            return True  # WebSocket exec: OpenAPI cannot describe it; the document names it
        return any(rx.match(path) and method in methods for rx, methods in routes)

    return documented


def test_zz_mcp_servers_call_only_documented_paths(daemon, log_start):
    """Every request the daemon logged since this module began (both MCP
    servers' REST calls, and this module's own checks) is documented;
    `/mcp` itself is the MCP transport, not a REST path."""
    with open(daemon.log, "rb") as f:
        f.seek(log_start)
        lines = f.read().decode(errors="replace").splitlines()
    sent = set()
    for line in lines:
        m = re.search(r"clawdspace_api::request: method=(\S+) path=(\S+)", line)
        if m:
            sent.add((m.group(1), m.group(2)))
    assert ("POST", "/mcp") in sent, "the log has no /mcp requests: was the request log on?"
    rest = {(m, p) for m, p in sent if p != "/mcp"}
    assert len(rest) >= 10
    for must in [("POST", "/api/spaces"), ("POST", r"/api/spaces/[^/]+/exec"), ("GET", r"/api/spaces/[^/]+/exec/ws"),
                 ("PUT", r"/api/spaces/[^/]+/fs"), ("GET", "/api/nodes")]:
        assert any(m == must[0] and re.fullmatch(must[1], p) for m, p in rest), must
    doc = httpx.get(daemon.url + "/api/openapi.json").json()
    documented = _documented(doc)
    undocumented = sorted((m, p) for m, p in rest if not documented("GET" if m == "HEAD" else m, p))
    assert undocumented == [], f"MCP servers called paths the OpenAPI document lacks: {undocumented}"

"""The SDK uses only documented endpoints: every request it sent in this
session (and in a workflow run here that calls every method) must match a
path and method of the server's OpenAPI document. WebSocket exec, which
OpenAPI cannot describe, must be the endpoint the document's description
names."""

import asyncio
import re
from pathlib import Path

import httpx

import clawdspace
from clawdspace import NotFound

from conftest import Daemon, has_path, unique


def _matcher(doc):
    routes = []
    for template, ops in doc["paths"].items():
        rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "/?$")
        routes.append((rx, {m.upper() for m in ops}))

    def documented(method, path):
        method = "GET" if method == "HEAD" else method
        if (method, path) == ("GET", "/api/openapi.json"):
            return True  # the document itself
        return any(rx.match(path) and method in methods for rx, methods in routes)

    return documented


def _every_method(daemon: Daemon, tmp: Path):
    c = daemon.client()
    c.health(), c.system(), c.capabilities(), c.openapi(), c.list()
    tpl = f"oas-{unique()}"
    c.templates(), c.template("default"), c.put_template(f"name: {tpl}\n")
    c.delete_template(tpl), c.audit(), c.audit(space="x", limit=1)
    with c.create(unique("oas"), memory="256m", network="none") as s:
        s.refresh(), s.exec("echo hi"), s.stats(), s.observability(), s.pause(), s.resume()
        st = s.exec_stream("cat", tty=True)
        st.write("x"), st.resize(90, 30), st.close_stdin()
        st.close()
        if has_path(daemon, "/api/spaces/{name}/fs"):
            s.files.write("/tmp/oas", "x"), s.files.read("/tmp/oas"), s.files.stat("/tmp/oas")
            s.files.upload(__file__, "/tmp/oas2"), s.files.exists("/tmp/nope")
            s.files.download("/tmp/oas2", "/dev/null"), s.files.remove("/tmp/oas2")
            s.files.upload_dir(Path(__file__).parent, "/tmp/oasdir")
            s.files.download_dir("/tmp/oasdir", tmp / "oasdir")
        if has_path(daemon, "/api/spaces/{name}/files"):
            s.files.list("/")
    try:
        c.get(unique()).destroy()
    except NotFound:
        pass
    fleet = clawdspace.Fleet(daemon.url, daemon.key, event_hooks={"request": [daemon.record]})
    fleet.nodes(), fleet.list()

    async def amain():
        async with daemon.aclient() as a:
            await a.list(), await a.templates(), await a.template("default")
            await a.put_template(f"name: {tpl}\n"), await a.delete_template(tpl)
            await a.audit(space="x", limit=1)
            s = await a.create(unique("oas"), network="none")
            async with s:
                await s.exec("true"), await s.pause(), await s.resume(), await s.stats()
                await s.observability()
                st = await s.exec_stream("true")
                await st.wait()
                if has_path(daemon, "/api/spaces/{name}/fs"):
                    await s.files.write("/tmp/a", "a"), await s.files.read("/tmp/a")
                    await s.files.stat("/tmp/a"), await s.files.exists("/tmp/b")
                    await s.files.upload(__file__, "/tmp/c")
                    await s.files.download("/tmp/c", tmp / "c"), await s.files.list("/")
                    await s.files.upload_dir(Path(__file__).parent, "/tmp/d")
                    await s.files.download_dir("/tmp/d", tmp / "d"), await s.files.remove("/tmp/a")
            s2 = await a.create(unique("oas"), network="none")
            await s2.destroy(remove_volume=True)

    asyncio.run(amain())


def test_sdk_calls_only_documented_paths(daemon: Daemon, tmp_path: Path):
    _every_method(daemon, tmp_path)
    doc = httpx.get(daemon.url + "/api/openapi.json").json()
    documented = _matcher(doc)
    sent = sorted(set(daemon.requests))
    assert len(sent) >= 10
    undocumented = [(m, p) for m, p in sent if not documented(m, p)]
    assert undocumented == [], f"SDK called paths the OpenAPI document lacks: {undocumented}"
    # WebSockets: only the exec endpoint, which the document names.
    assert daemon.websockets
    ws_template = "/api/spaces/{name}/exec/ws"
    assert ws_template in doc["info"]["description"] or ws_template in doc["paths"]
    for url in daemon.websockets:
        assert re.match(r"^wss?://[^/]+/api/spaces/[^/]+/exec/ws$", url), url

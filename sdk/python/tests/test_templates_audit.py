"""Templates, the audit log, observability and network policies against a
real daemon (and the pure parsing of what they return)."""

import asyncio
import uuid
from typing import Callable, Iterator

import pytest

import clawdspace
from clawdspace import AuditEvent, Clawdspace, InvalidInput, NotFound, SpaceInfo, TemplateInfo
from clawdspace import _core

from conftest import Daemon, unique


@pytest.fixture
def template_name(client: Clawdspace) -> Iterator[Callable[[], str]]:
    """Makes template names; deletes every template of those names afterwards."""
    made = []

    def make() -> str:
        made.append(f"sdkt-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    for name in made:
        try:
            client.delete_template(name)
        except NotFound:
            pass


def test_default_templates(client: Clawdspace):
    listed = client.templates()
    assert all(isinstance(t, TemplateInfo) for t in listed)
    names = [t.name for t in listed]
    assert {"default", "gpu", "offline", "lan"} <= set(names)
    assert names == sorted(names)
    offline = client.template("offline")
    assert "name: offline" in offline and "mode: none" in offline


def test_put_get_delete_template_and_create_from_it(client: Clawdspace, template_name):
    name = template_name()
    doc = (f"name: {name}\ndescription: SDK test\nresources:\n  memory: 300m\n"
           "  cpus: 0.5\nnetwork:\n  mode: none\n")
    t = client.put_template(doc)
    assert t["name"] == name and t["resources"]["memory"] == "300m"
    assert TemplateInfo(name, "SDK test") in client.templates()
    got = client.template(name)
    assert f"name: {name}" in got and "300m" in got
    with client.create(unique("tpl"), template=name) as s:
        assert (s.memory, s.cpus, s.network) == (300 << 20, 0.5, "none")
    with client.create(unique("tpl"), template=name, memory="256m") as s:  # explicit wins
        assert (s.memory, s.cpus) == (256 << 20, 0.5)
    # Replaced by a document of the same name.
    assert client.put_template(doc.replace("300m", "280m"))["resources"]["memory"] == "280m"
    assert "280m" in client.template(name)
    client.delete_template(name)
    assert name not in [x.name for x in client.templates()]
    with pytest.raises(NotFound) as e:
        client.template(name)
    assert e.value.status == 404 and e.value.message == "Template not found"


def test_template_errors(client: Clawdspace, template_name):
    with pytest.raises(InvalidInput) as e:
        client.put_template("name: [unclosed")
    assert e.value.status == 400 and e.value.message.startswith("Invalid YAML: ")
    with pytest.raises(InvalidInput) as e:
        client.put_template(f"name: {template_name()}\nresources:\n  memroy: 1g\n")
    assert e.value.message == "resources: Unrecognized key(s) in object: 'memroy'"
    with pytest.raises(InvalidInput) as e:
        client.put_template("  ")
    assert e.value.message == "yaml required"
    with pytest.raises(NotFound, match="Template not found"):
        client.template("no-such-template")
    with pytest.raises(NotFound, match="Template not found"):
        client.delete_template("no-such-template")
    with pytest.raises(NotFound):
        client.template("bad name!")  # outside the name rule: 404 too
    with pytest.raises(InvalidInput, match="Invalid template: Template not found"):
        client.create(unique(), template="no-such-template")


def test_audit_create_then_exec(client: Clawdspace, template_name):
    with client.create(unique("aud"), memory="256m", network="none") as s:
        assert s.exec("exit 3").exit_code == 3
        events = client.audit(space=s.name)
        assert all(isinstance(e, AuditEvent) and e.space == s.name for e in events)
        assert [e.type for e in events] == ["space.create", "space.exec"]
        create, ex = events
        assert create.meta["memory"] == 256 << 20 and create.meta["network"] == "none"
        assert ex.meta["exitCode"] == 3 and ex.meta["command"] == "exit 3"
        assert create.ts <= ex.ts and ex.ts.endswith("Z")
        last = client.audit(space=s.name, limit=1)
        assert [e.type for e in last] == ["space.exec"]
    # Events of no space: a template's change.
    name = template_name()
    client.put_template(f"name: {name}\n")
    ups = [e for e in client.audit(limit=1000) if e.type == "template.upsert"]
    assert any(e.space is None and e.meta.get("template") == name for e in ups)
    assert client.audit(space=unique("none")) == []


def test_observability(client: Clawdspace):
    with client.create(unique("obs"), memory="256m", network="none") as s:
        o = s.observability()
        assert o["stats"]["memoryLimitBytes"] == 256 << 20 and o["stats"]["pids"] >= 1
        assert isinstance(o["top"], list) and o["top"]
        assert {"pid", "cpu", "mem", "etime", "command"} <= set(o["top"][0])
        assert o["workspaceSizeBytes"] >= 0
        s.pause()  # read from the host: works paused too
        assert "stats" in s.observability()
    with pytest.raises(NotFound):
        client.get(unique()).observability()


def test_network_policy_round_trips(client: Clawdspace):
    policy = {"mode": "internet", "blockCidrs": ["10.99.0.0/16"]}
    with client.create(unique("net"), memory="256m", network=policy) as s:
        assert s.network == "internet" and s.ip_address
        assert s.info.network_policy == policy
        assert client.get(s.name).info.network_policy == policy
        assert s.info.raw["blockCidrs"] == ["10.99.0.0/16"]
    with client.create(unique("net"), memory="256m", network={"allowDomains": ["pypi.org"]}) as s:
        # mode and allowPorts as the server filled them in
        assert s.info.network_policy == {"mode": "internet", "allowDomains": ["pypi.org"],
                                         "allowPorts": [80, 443]}
    with client.create(unique("net"), memory="256m", network="none") as s:
        assert s.info.network_policy is None and s.network == "none"
    with pytest.raises(InvalidInput, match="Invalid network: unknown field 'blockCidr'"):
        client.create(unique(), network={"blockCidr": ["10.0.0.0/8"]})


def test_async_templates_audit_observability(daemon: Daemon, template_name):
    async def main():
        async with daemon.aclient() as a:
            assert "default" in [t.name for t in await a.templates()]
            assert "name: default" in await a.template("default")
            name = template_name()
            t = await a.put_template(f"name: {name}\nresources:\n  memory: 260m\n")
            assert t["resources"]["memory"] == "260m"
            s = await a.create(unique("atpl"), template=name, network="none")
            async with s:
                assert s.memory == 260 << 20
                await s.exec("true")
                o = await s.observability()
                assert "stats" in o and "top" in o
                types = [e.type for e in await a.audit(space=s.name)]
                assert types == ["space.create", "space.exec"]
            await a.delete_template(name)
            with pytest.raises(NotFound):
                await a.template(name)
            with pytest.raises(InvalidInput, match="Invalid YAML"):
                await a.put_template("name: [")

    asyncio.run(main())


# -- pure: no daemon ----------------------------------------------------------

_SPACE = {"name": "n", "id": "0123456789ab", "status": "running", "created": "c",
          "started": "s", "image": "i", "memory": 1, "cpus": 1, "lastActivity": "l"}


def test_space_info_network_fields():
    plain = SpaceInfo.from_json(dict(_SPACE, network="lan"))
    assert (plain.network, plain.network_policy) == ("lan", None)
    assert SpaceInfo.from_json(_SPACE).network == "none"
    listed = SpaceInfo.from_json(dict(
        _SPACE, network="internet", allowDomains=["pypi.org"], allowPorts=[443],
        volume={"name": "n", "mountpoint": "/workspace"},
        ports=[{"container": 8000, "host": 18000}]))
    assert listed.network_policy == {"mode": "internet", "allowDomains": ["pypi.org"],
                                     "allowPorts": [443]}
    # A network given as an object (the create form) does not break the record.
    obj = SpaceInfo.from_json(dict(_SPACE, network={"mode": "lan", "blockCidrs": ["1.2.3.4/32"]}))
    assert obj.network == "lan"
    assert obj.network_policy == {"mode": "lan", "blockCidrs": ["1.2.3.4/32"]}
    assert SpaceInfo.from_json(dict(_SPACE, network={})).network == "internet"


def test_create_body_passes_template_and_policy_verbatim():
    policy = {"mode": "internet", "blockCidrs": ["10.0.0.0/8"], "allowDomains": ["a.b"],
              "allowPorts": [443]}
    body = _core.create_body("x", {"template": "small", "network": policy, "memory": None})
    assert body == {"name": "x", "template": "small", "network": policy}


def test_audit_event_and_params():
    e = AuditEvent.from_json({"ts": "t", "type": "template.delete", "meta": {"template": "x"}})
    assert (e.ts, e.type, e.space, e.meta) == ("t", "template.delete", None, {"template": "x"})
    assert AuditEvent.from_json({"ts": "t", "space": "s", "type": "space.pause"}).meta == {}
    assert _core.audit_params(None, 200) == {"limit": "200"}
    assert _core.audit_params("a b", 5) == {"limit": "5", "space": "a b"}
    assert _core.template_path("a/b") == "/api/templates/a%2Fb"
    assert clawdspace.TemplateInfo.from_json({"name": "x"}).description == ""

"""Fleet over a real daemon: without /api/nodes it is the one server."""

import pytest

import clawdspace
from clawdspace import Fleet, NoCapacity, NotFound

from conftest import Daemon, has_path, unique


def test_fleet_of_one_server(daemon: Daemon):
    if has_path(daemon, "/api/nodes"):
        pytest.skip("this daemon has /api/nodes: the single-node fallback is not used")
    with Fleet(daemon.url, daemon.key, event_hooks={"request": [daemon.record]}) as fleet:
        nodes = fleet.nodes()
        assert len(nodes) == 1
        node = nodes[0]
        assert node.online and node.url == daemon.url
        assert node.memory_free > 0 and node.gpus_total == node.gpus_free
        name = unique("fleet")
        with fleet.create(name, memory="256m", network="none") as s:
            assert s.client.url == daemon.url
            assert fleet.get(name).id == s.id
            assert name in [x.name for x in fleet.list()]
            assert fleet.nodes()[0].running >= 1
            with pytest.raises(NotFound):
                fleet.create(unique(), node="elsewhere")
            if not node.gpus_total:
                with pytest.raises(NoCapacity):
                    fleet.create(unique(), gpu=True)
        with pytest.raises(NotFound):
            fleet.get(name)


def test_fleet_marks_unreachable_nodes_offline(daemon: Daemon):
    with Fleet(key=daemon.key, urls=[daemon.url, "http://127.0.0.1:1"]) as fleet:
        nodes = {n.url: n for n in fleet.nodes()}
        assert nodes["http://127.0.0.1:1"].online is False
        assert nodes[daemon.url].online is True
        assert isinstance(fleet.list(), list)
        with pytest.raises(clawdspace.NotFound):
            fleet.get(unique())

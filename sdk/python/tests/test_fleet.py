"""Fleet over a real daemon: without /api/nodes it is the one server."""

import pytest

import clawdspace
from clawdspace import Clawdspace, Fleet, NoCapacity, NotFound

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


@pytest.fixture(scope="module")
def second_daemon(daemon: Daemon):
    """Another server with the same key: a fleet of two."""
    from conftest import running_daemon

    with running_daemon(key=daemon.key) as d:
        yield d


def test_fleet_of_two_servers(daemon: Daemon, second_daemon: Daemon):
    on_b = unique("onb")
    with Clawdspace(second_daemon.url, daemon.key) as b, b.create(on_b, network="none"):
        with Fleet(key=daemon.key, urls=[daemon.url, second_daemon.url]) as fleet:
            nodes = fleet.nodes()
            assert [n.url for n in nodes] == [daemon.url, second_daemon.url]
            assert all(n.online for n in nodes)
            # found wherever it is
            assert fleet.get(on_b).client.url == second_daemon.url
            assert on_b in [s.name for s in fleet.list()]
            # placed on the node asked for, by URL
            with fleet.create(unique("f2"), node=daemon.url, network="none") as s:
                assert s.client.url == daemon.url
                assert fleet.get(s.name).client.url == daemon.url
            # placed by the policy on real figures: no node has a GPU here
            if not any(n.gpus_total for n in nodes):
                with pytest.raises(NoCapacity):
                    fleet.create(unique("f3"), gpu=True)
    # a node whose key differs answers 401: the fleet says so
    with Fleet(key="wrong", urls=[second_daemon.url]) as bad:
        assert bad.nodes()[0].online is False
        with pytest.raises(clawdspace.Unauthorized):
            bad.list()

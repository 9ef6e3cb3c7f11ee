"""Fleet placement as a pure function (no daemon)."""

import pytest

from clawdspace import NoCapacity, Node, place
from clawdspace.fleet import gpus_in_use, gpus_needed

GB = 1 << 30


def test_cpu_space_goes_to_most_free_memory_then_fewest_running():
    nodes = [
        Node("a", "http://a", memory_free=8 * GB, running=1),
        Node("b", "http://b", memory_free=16 * GB, running=9),
        Node("c", "http://c", memory_free=16 * GB, running=2),
        Node("d", "http://d", memory_free=64 * GB, online=False),
    ]
    assert place(nodes).name == "c"


def test_gpu_space_goes_to_a_node_with_free_gpus():
    nodes = [
        Node("big", "http://big", memory_free=100 * GB),
        Node("g1", "http://g1", gpus_total=2, gpus_free=0, memory_free=50 * GB),
        Node("g2", "http://g2", gpus_total=1, gpus_free=1, memory_free=4 * GB),
    ]
    assert place(nodes, gpus=1).name == "g2"
    with pytest.raises(NoCapacity, match="2 free GPUs"):
        place(nodes, gpus=2)


def test_gpu_ties_break_on_free_gpus_then_memory():
    nodes = [
        Node("x", "http://x", gpus_total=8, gpus_free=2, memory_free=90 * GB),
        Node("y", "http://y", gpus_total=8, gpus_free=4, memory_free=10 * GB),
        Node("z", "http://z", gpus_total=8, gpus_free=4, memory_free=20 * GB),
    ]
    assert place(nodes, gpus=2).name == "z"


def test_no_online_node():
    with pytest.raises(NoCapacity):
        place([Node("a", "http://a", online=False)])
    with pytest.raises(NoCapacity):
        place([])


def test_gpus_asked_and_in_use():
    assert gpus_needed({}) == 0
    assert gpus_needed({"gpu": True}) == 1
    assert gpus_needed({"gpus": 3}) == 3
    assert gpus_needed({"gpus": [0, 2]}) == 2
    spaces = [{"gpus": ["nvidia.com/gpu=0"]}, {}, {"gpus": ["nvidia.com/gpu=1"]}]
    assert gpus_in_use(spaces, 4) == 2
    assert gpus_in_use([{"gpus": ["all"]}], 4) == 4

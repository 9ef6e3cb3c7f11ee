"""Fleets: several servers used as one, with placement of new spaces.

Nodes come from the seed server's `GET /api/nodes` when its OpenAPI document
has that path, else the seed server alone (or the URLs you pass). New spaces
go where the seed server's `GET /api/nodes/placement` says (the rule the CLI
and the dashboard use); with servers that lack it, `place` decides here, a
pure function of each node's figures:

* a GPU space goes to the online node with the most free GPUs (at least the
  number asked for), ties broken by free memory;
* any other space to the node with the most free memory, then the fewest
  running spaces, then the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _core
from .client import Clawdspace, Space
from .config import host_url, load_settings
from .errors import ClawdspaceError, NotFound


@dataclass(frozen=True)
class Node:
    """A server of the fleet and the figures placement uses."""

    name: str
    url: str
    online: bool = True
    gpus_total: int = 0
    gpus_free: int = 0
    memory_free: int = 0
    running: int = 0


class NoCapacity(ClawdspaceError):
    """No node of the fleet can take the space (none online, or no free GPU)."""


def gpus_needed(options: Dict[str, Any]) -> int:
    """GPUs a create's options ask for (0 for a CPU space)."""
    gpus = options.get("gpus")
    if isinstance(gpus, bool):
        return 1 if gpus else 0
    if isinstance(gpus, int):
        return max(gpus, 1)
    if isinstance(gpus, (list, tuple)):
        return max(len(gpus), 1)
    return 1 if options.get("gpu") else 0


def place(nodes: Iterable[Node], gpus: int = 0) -> Node:
    """The node a new space goes to (see the module's doc); `NoCapacity` if none fits."""
    online = [n for n in nodes if n.online]
    if not online:
        raise NoCapacity("no online node in the fleet")
    if gpus > 0:
        fits = [n for n in online if n.gpus_free >= gpus]
        if not fits:
            raise NoCapacity(f"no node has {gpus} free GPU{'s' if gpus > 1 else ''}")
        return min(fits, key=lambda n: (-n.gpus_free, -n.memory_free, n.running, n.name))
    return min(online, key=lambda n: (-n.memory_free, n.running, n.name))


def gpus_in_use(spaces: Sequence[Dict[str, Any]], total: int) -> int:
    """GPUs held by spaces (`"all"` holds every one), at most `total`."""
    used = 0
    for s in spaces:
        g = s.get("gpus") or []
        used += total if "all" in g else len(g)
    return min(used, total)


class Fleet:
    """Several Clawdspace servers as one.

    >>> fleet = Fleet()                         # nodes from the configuration
    >>> space = fleet.create("train", gpu=True) # placed on a node with a free GPU
    >>> fleet.get("train").exec("nvidia-smi")

    `url`/`key`: the seed server (default: the configuration, as for
    `Clawdspace`); `urls`: an explicit node list (names are then the
    servers' hostnames). All nodes share one key.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        key: Optional[str] = None,
        *,
        urls: Optional[Sequence[str]] = None,
        **client_options: Any,
    ) -> None:
        settings = load_settings() if key is None or (url is None and urls is None) else None
        self.key = key if key is not None else settings.key  # type: ignore[union-attr]
        self._options = client_options
        self._clients: Dict[str, Clawdspace] = {}
        if urls is not None:
            self._seeds = [host_url(u) for u in urls]
        elif url is not None:
            self._seeds = [host_url(url)]
        else:
            self._seeds = settings.urls  # type: ignore[union-attr]

    def client(self, url: str) -> Clawdspace:
        """The client of one node (made once)."""
        if url not in self._clients:
            self._clients[url] = Clawdspace(url, self.key, **self._options)
        return self._clients[url]

    def _members(self) -> List[Tuple[Optional[str], str, bool]]:
        """(name or None, url, online) of every node."""
        out: List[Tuple[Optional[str], str, bool]] = []
        for seed in self._seeds:
            c = self.client(seed)
            try:
                paths = c.openapi().get("paths", {})
            except ClawdspaceError:
                out.append((None, seed, False))
                continue
            listed: List[Dict[str, Any]] = []
            if "/api/nodes" in paths:
                try:
                    listed = c._json("GET", "/api/nodes").get("nodes", [])
                except ClawdspaceError:
                    # E.g. another key: the seed alone, whose calls then say why.
                    listed = []
            if listed:
                for n in listed:
                    # The seed itself is kept at the address it answered on:
                    # the URL it reports is the one its peers use.
                    url = seed if n.get("source") == "self" else host_url(n["url"])
                    out.append((n.get("name"), url, n.get("status") == "online"))
            else:
                out.append((None, seed, True))
        seen: Dict[str, Tuple[Optional[str], str, bool]] = {}
        for m in out:
            seen.setdefault(m[1], m)
        return list(seen.values())

    def nodes(self) -> List[Node]:
        """Every node with its current figures (offline nodes included)."""
        result = []
        for name, url, online in self._members():
            result.append(self._measure(name, url, online))
        return result

    def _measure(self, name: Optional[str], url: str, online: bool) -> Node:
        fallback = name or url
        if not online:
            return Node(fallback, url, online=False)
        c = self.client(url)
        try:
            system = c.system()
            caps = c.capabilities()
            spaces = c._json("GET", "/api/spaces")["spaces"]
        except ClawdspaceError:
            return Node(fallback, url, online=False)
        total = int(caps.get("gpuCount") or len(caps.get("gpus") or [])) if caps.get("gpu") else 0
        return Node(
            name=name or str(system.get("hostname", url)).lower(),
            url=url,
            gpus_total=total,
            gpus_free=total - gpus_in_use(spaces, total),
            memory_free=_core.parse_size((system.get("memory") or {}).get("free")),
            running=int((system.get("docker") or {}).get("containersRunning", 0)),
        )

    def create(self, name: str, *, node: Union[str, None] = None, **options: Any) -> Space:
        """Creates a space on `node` (a name or URL) or where `place` puts it."""
        if node is None:
            placed = self._server_placement(gpus_needed(options))
            if placed is not None:
                return self.client(placed).create(name, **options)
        nodes = self.nodes()
        if node is not None:
            match = [n for n in nodes if node in (n.name, n.url) or host_url(node) == n.url]
            if not match:
                raise NotFound(f"no node {node!r} in the fleet", 404)
            target = match[0]
        else:
            target = place(nodes, gpus_needed(options))
        return self.client(target.url).create(name, **options)

    def _server_placement(self, gpus: int) -> Optional[str]:
        """The URL of the node the seed server's placement chooses (the
        fleet's one rule, `GET /api/nodes/placement`), or None when no seed
        offers it (then `place` decides here)."""
        for seed in self._seeds:
            c = self.client(seed)
            try:
                if "/api/nodes/placement" not in c.openapi().get("paths", {}):
                    continue
                p = c._json("GET", f"/api/nodes/placement?gpus={gpus}")
            except NotFound:
                raise
            except ClawdspaceError as e:
                if getattr(e, "status", None) == 409:
                    raise NoCapacity(str(e)) from e
                continue
            nodes = c._json("GET", "/api/nodes").get("nodes", [])
            if nodes and nodes[0].get("name") == p.get("node"):
                return seed
            return host_url(str(p["url"]))
        return None

    def get(self, name: str) -> Space:
        """The space called `name` on the first node that has it; `NotFound` if none."""
        for _, url, online in self._members():
            if not online:
                continue
            try:
                return self.client(url).get(name)
            except NotFound:
                continue
        raise NotFound(f"Space '{name}' not found on any node", 404)

    def list(self) -> List[Space]:
        """Every space of every online node."""
        out: List[Space] = []
        for _, url, online in self._members():
            if online:
                out += self.client(url).list()
        return out

    def close(self) -> None:
        for c in self._clients.values():
            c.close()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""Plain data returned by the API (`Space` objects live in `space.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple

Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class ExecResult:
    """What a finished command produced.

    `stdout`/`stderr` come from `POST .../exec` trimmed at both ends (the
    API's contract) and from `exec_stream().wait()` untrimmed.
    """

    stdout: str
    stderr: str
    exit_code: int
    truncated: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "ExecResult":
        return cls(
            stdout=v.get("stdout", ""),
            stderr=v.get("stderr", ""),
            exit_code=int(v.get("exitCode", -1)),
            truncated=bool(v.get("truncated", False)),
            timed_out=bool(v.get("timedOut", False)),
        )


@dataclass(frozen=True)
class Chunk:
    """A piece of a streaming command's output: raw bytes of one stream."""

    stream: Stream
    data: bytes

    @property
    def text(self) -> str:
        """The bytes decoded as UTF-8 (invalid bytes replaced)."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory listing."""

    name: str
    path: str
    type: str  # "file" | "dir" | "symlink" | "other"
    size: int = 0
    mtime_ms: Optional[int] = None

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "FileEntry":
        return cls(
            name=v.get("name", ""),
            path=v.get("path", ""),
            type=v.get("type", "other"),
            size=int(v.get("size") or 0),
            mtime_ms=v.get("mtimeMs"),
        )


@dataclass(frozen=True)
class SpaceInfo:
    """The API's Space record (docs/API.md, "Space")."""

    name: str
    id: str
    status: str
    created: str
    started: str
    image: str
    memory: int
    cpus: float
    last_activity: str
    network: str = "none"
    gpus: List[str] = field(default_factory=list)
    ip_address: Optional[str] = None
    disk: Optional[int] = None
    #: The space's network policy as `create(network=...)` takes it
    #: (`{"mode", "blockCidrs"?, "allowDomains"?, "allowPorts"?}`), made from
    #: the record's `network`, `blockCidrs`, `allowDomains` and `allowPorts`;
    #: None when the space has none of the three lists.
    network_policy: Optional[Dict[str, Any]] = None
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "SpaceInfo":
        network, policy = _network(v)
        return cls(
            name=v["name"],
            id=v.get("id", ""),
            status=v.get("status", ""),
            created=v.get("created", ""),
            started=v.get("started", ""),
            image=v.get("image", ""),
            memory=int(v.get("memory", 0)),
            cpus=float(v.get("cpus", 0)),
            last_activity=v.get("lastActivity", ""),
            network=network,
            gpus=list(v.get("gpus") or []),
            ip_address=v.get("ipAddress"),
            disk=v.get("disk"),
            network_policy=policy,
            raw=dict(v),
        )


_POLICY_KEYS = ("blockCidrs", "allowDomains", "allowPorts")


def _network(v: Dict[str, Any]) -> Tuple[str, Optional[Dict[str, Any]]]:
    """The mode and the policy of a Space record. The lists are top-level
    fields (docs/API.md, "Space"); a `network` object (a policy as a create
    takes it) is read too, its lists winning."""
    net = v.get("network", "none")
    lists = {k: v[k] for k in _POLICY_KEYS if v.get(k) is not None}
    if isinstance(net, dict):
        lists.update({k: net[k] for k in _POLICY_KEYS if net.get(k) is not None})
        net = net.get("mode") or "internet"
    mode = str(net) if net is not None else "none"
    if not lists:
        return mode, None
    return mode, {"mode": mode, **{k: list(x) for k, x in lists.items()}}


@dataclass(frozen=True)
class FileStat:
    """Metadata of a path in a space (a symlink is not followed)."""

    type: str  # "file" | "dir" | "symlink" | "other"
    size: int
    mode: int  # permission bits, e.g. 0o644
    uid: int
    gid: int
    mtime_ms: int
    link_target: Optional[str] = None

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "FileStat":
        return cls(
            type=v.get("type", "other"),
            size=int(v.get("size") or 0),
            mode=int(v.get("mode") or 0),
            uid=int(v.get("uid") or 0),
            gid=int(v.get("gid") or 0),
            mtime_ms=int(v.get("mtimeMs") or 0),
            link_target=v.get("linkTarget"),
        )


@dataclass(frozen=True)
class TemplateInfo:
    """A template as `GET /api/templates` lists it (its YAML: `template(name)`)."""

    name: str
    description: str = ""

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "TemplateInfo":
        return cls(name=v["name"], description=v.get("description") or "")


@dataclass(frozen=True)
class AuditEvent:
    """One event of the audit log (docs/API.md, "Audit log").

    `type` is e.g. `"space.create"`, `"space.exec"`, `"template.upsert"`;
    `space` is None for events that concern no space; `meta` holds the
    event's details (`{}` when it has none), e.g. `exitCode` of an exec.
    """

    ts: str
    type: str
    space: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "AuditEvent":
        return cls(
            ts=v.get("ts", ""),
            type=v.get("type", ""),
            space=v.get("space"),
            meta=dict(v.get("meta") or {}),
        )

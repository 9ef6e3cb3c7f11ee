"""Plain data returned by the API (`Space` objects live in `space.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

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
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "SpaceInfo":
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
            network=v.get("network", "none"),
            gpus=list(v.get("gpus") or []),
            ip_address=v.get("ipAddress"),
            disk=v.get("disk"),
            raw=dict(v),
        )


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

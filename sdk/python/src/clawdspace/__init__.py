"""Clawdspace Python SDK: sandboxed Linux spaces on your own servers.

>>> from clawdspace import Clawdspace
>>> cs = Clawdspace()                      # URL and key as the CLI finds them
>>> with cs.create("scratch") as space:    # destroyed when the block ends
...     r = space.exec("echo hello")
...     print(r.stdout, r.exit_code)

`AsyncClawdspace` is the asyncio twin; `Fleet` spreads spaces over servers.
"""

from .aio import AsyncClawdspace, AsyncExecStream, AsyncFiles, AsyncSpace
from .client import Clawdspace, ExecStream, Files, Space
from .errors import (
    ClawdspaceError,
    CommandFailed,
    Conflict,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    ServerError,
    Unauthorized,
)
from .fleet import Fleet, NoCapacity, Node, place
from .models import AuditEvent, Chunk, ExecResult, FileEntry, FileStat, SpaceInfo, TemplateInfo

__version__ = "0.1.0"

__all__ = [
    "AsyncClawdspace",
    "AsyncExecStream",
    "AsyncFiles",
    "AsyncSpace",
    "AuditEvent",
    "Chunk",
    "Clawdspace",
    "ClawdspaceError",
    "CommandFailed",
    "Conflict",
    "ConnectionFailed",
    "ExecResult",
    "ExecStream",
    "FileEntry",
    "FileStat",
    "Files",
    "Fleet",
    "InvalidInput",
    "NoCapacity",
    "Node",
    "NotFound",
    "ServerError",
    "SpaceInfo",
    "Space",
    "TemplateInfo",
    "Unauthorized",
    "place",
]

"""What the sync and async clients share: request bodies, paths, error and frame decoding."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from .errors import ClawdspaceError, error_for_event, error_for_status
from .models import Chunk

Command = Union[str, Sequence[str]]
#: Largest binary frame the SDK sends on a WebSocket (the API asks for <= 1 MiB).
WS_FRAME = 1 << 20
#: Read/write chunk of uploads and downloads.
IO_CHUNK = 1 << 20


def space_path(name: str, *rest: str) -> str:
    """`/api/spaces/<name>[/rest...]` with the name percent-encoded."""
    return "/".join([f"/api/spaces/{quote(name, safe='')}", *rest])


def template_path(name: str) -> str:
    """`/api/templates/<name>` with the name percent-encoded."""
    return f"/api/templates/{quote(name, safe='')}"


def audit_params(space: Optional[str], limit: int) -> Dict[str, str]:
    """The query of `GET /api/audit` (the server clamps `limit` to 1-1000)."""
    params = {"limit": str(int(limit))}
    if space is not None:
        params["space"] = space
    return params


def memory_value(memory: Union[str, int]) -> str:
    """The API's memory string: strings as given (`"512m"`, `"2g"`), ints as bytes."""
    if isinstance(memory, bool):
        raise TypeError("memory must be a string like '512m' or a number of bytes")
    if isinstance(memory, int):
        return f"{-(-memory // 1024)}k"
    return memory


def create_body(name: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    """The `POST /api/spaces` body. Known options: memory, cpus, gpu, gpus,
    disk, network, image; anything else (`template`, `env`, ...) and a
    `network` policy object are passed through verbatim."""
    body: Dict[str, Any] = {"name": name}
    for k, v in options.items():
        if v is None:
            continue
        if k in ("memory", "disk"):
            v = memory_value(v)
        body[k] = v
    return body


def exec_body(
    command: Command,
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    user: Optional[str] = None,
    stdin: Optional[Union[str, bytes]] = None,
    timeout: Optional[float] = None,
) -> Dict[str, Any]:
    """The body of `POST .../exec` (and the first WebSocket message)."""
    body: Dict[str, Any] = {"command": command if isinstance(command, str) else list(command)}
    if cwd is not None:
        body["cwd"] = cwd
    if env is not None:
        body["env"] = dict(env)
    if user is not None:
        body["user"] = str(user)
    if stdin is not None:
        body["stdin"] = stdin.decode("utf-8") if isinstance(stdin, bytes) else stdin
    if timeout is not None:
        body["timeoutMs"] = max(1, int(timeout * 1000))
    return body


def error_from_body(status: int, body: bytes) -> ClawdspaceError:
    """The exception for an error response (`{"error": ...}` or any text)."""
    message = ""
    try:
        v = json.loads(body)
        if isinstance(v, dict) and isinstance(v.get("error"), str):
            message = v["error"]
    except ValueError:
        message = body.decode("utf-8", "replace").strip()[:500]
    return error_for_status(status, message or f"HTTP {status}")


def json_object(r: Any, method: str, path: str) -> Dict[str, Any]:
    """The JSON object an answer carries; `ClawdspaceError` if it is not one."""
    try:
        v = r.json()
    except ValueError as e:
        raise ClawdspaceError(f"{method} {path}: the answer is not JSON") from e
    if not isinstance(v, dict):
        raise ClawdspaceError(f"{method} {path}: expected a JSON object")
    return v


def ws_url(base: str, name: str) -> str:
    """The WebSocket exec URL of a space."""
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + space_path(name, "exec", "ws")


def auth_headers(key: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def first_message(
    command: Command,
    *,
    tty: bool,
    cols: int,
    rows: int,
    cwd: Optional[str],
    env: Optional[Mapping[str, str]],
    user: Optional[str],
    stdin: Optional[Union[str, bytes]],
) -> str:
    body = exec_body(command, cwd=cwd, env=env, user=user, stdin=stdin)
    if tty:
        body.update(tty=True, cols=cols, rows=rows)
    return json.dumps(body)


def stdin_frames(data: Union[str, bytes]) -> List[bytes]:
    """Stdin bytes cut into frames of at most 1 MiB."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return [raw[i : i + WS_FRAME] for i in range(0, len(raw), WS_FRAME)]


class FrameState:
    """Decodes server frames; remembers the exit event."""

    def __init__(self) -> None:
        self.exit_code: Optional[int] = None
        self.timed_out = False

    def decode(self, msg: Union[str, bytes]) -> Optional[Chunk]:
        """A chunk for an output frame, None for events; raises on an error event."""
        if isinstance(msg, (bytes, bytearray, memoryview)):
            b = bytes(msg)
            if not b:
                return None
            return Chunk("stdout" if b[0] == 1 else "stderr", b[1:])
        try:
            event = json.loads(msg)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        if kind == "exit":
            self.exit_code = int(event.get("exitCode", -1))
            self.timed_out = bool(event.get("timedOut", False))
        elif kind == "error":
            raise error_for_event(str(event.get("error", "")))
        return None


def handshake_error(exc: BaseException) -> Optional[ClawdspaceError]:
    """The SDK error for a refused WebSocket handshake, if it is one."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is None:
        return None
    return error_from_body(int(status), getattr(response, "body", b"") or b"")


def fs_params(path: str, **extra: Any) -> Dict[str, str]:
    params = {"path": path}
    for k, v in extra.items():
        if v is not None:
            params[k] = v if isinstance(v, str) else json.dumps(v)
    return params


def mode_param(mode: Optional[int]) -> Optional[str]:
    return None if mode is None else format(mode, "o")


MIB = 1 << 20
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


def parse_size(text: Any) -> int:
    """Bytes of a `/api/system` figure like `"22.9 GB"` (1024-based); 0 if unknown."""
    if isinstance(text, (int, float)):
        return int(text)
    try:
        num, unit = str(text).split()
        return int(float(num) * _UNITS[unit.upper()])
    except (ValueError, KeyError):
        return 0


def split_result(chunks: List[Chunk]) -> Tuple[str, str]:
    out = b"".join(c.data for c in chunks if c.stream == "stdout")
    err = b"".join(c.data for c in chunks if c.stream == "stderr")
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

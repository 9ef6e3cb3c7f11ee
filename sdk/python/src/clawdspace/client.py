"""The synchronous client: `Clawdspace`, `Space`, `Files`, `ExecStream`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Union,
)

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect as ws_connect

from . import _core, _tar
from ._core import Command
from ._space_base import SpaceAttrs
from .config import resolve
from .errors import ClawdspaceError, CommandFailed, ConnectionFailed, NotFound
from .models import (
    AuditEvent,
    Chunk,
    ExecResult,
    FileEntry,
    FileStat,
    SpaceInfo,
    TemplateInfo,
)

DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
_DEFAULT: Any = object()


class Clawdspace:
    """A client of one Clawdspace server.

    >>> cs = Clawdspace(url="http://127.0.0.1:7777", key="...")
    >>> with cs.create("demo", memory="512m") as space:
    ...     print(space.exec("uname -a").stdout)

    Without `url`/`key` they come from the environment and `~/.clawdspace`
    as for the CLI (`clawdspace.config`). `event_hooks` go to httpx (e.g.
    to log every request); `timeout` is httpx's (exec waits for the command
    whatever it is, unless `exec(timeout=...)` says otherwise).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        key: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout] = DEFAULT_TIMEOUT,
        event_hooks: Optional[Mapping[str, List[Callable[..., Any]]]] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.url, self.key = resolve(url, key)
        self.http = httpx.Client(
            base_url=self.url,
            headers=_core.auth_headers(self.key),
            timeout=timeout,
            event_hooks=dict(event_hooks or {}),
            transport=transport,
        )

    # -- plumbing ---------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, str]] = None,
        content: Any = None,
        timeout: Any = _DEFAULT,
    ) -> httpx.Response:
        """Sends one request; raises the mapped `ClawdspaceError` on a 4xx/5xx."""
        kw: Dict[str, Any] = {}
        if timeout is not _DEFAULT:
            kw["timeout"] = timeout
        try:
            r = self.http.request(method, path, json=json, params=params, content=content, **kw)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: {e!r}") from e
        if r.status_code >= 400:
            raise _core.error_from_body(r.status_code, r.content)
        return r

    def _json(self, method: str, path: str, **kw: Any) -> Dict[str, Any]:
        return _core.json_object(self.request(method, path, **kw), method, path)

    # -- server -----------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """`GET /api/health` (`{"status": "ok", "version": ...}`)."""
        return self._json("GET", "/api/health")

    def system(self) -> Dict[str, Any]:
        """`GET /api/system`: host figures and space counters."""
        return self._json("GET", "/api/system")

    def capabilities(self) -> Dict[str, Any]:
        """`GET /api/system/capabilities`: GPUs, CPUs, memory."""
        return self._json("GET", "/api/system/capabilities")

    def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document."""
        return self._json("GET", "/api/openapi.json")

    # -- spaces -----------------------------------------------------------

    def create(self, name: str, **options: Any) -> "Space":
        """Creates and starts a space; returns it running.

        Options (all optional): `memory` (`"512m"`, `"2g"`, or bytes),
        `cpus`, `gpu`, `gpus` (count or list), `disk`, `image`, `network`:
        `"internet"`, `"none"`, `"lan"`, or a network policy object
        `{"mode": "internet", "blockCidrs": [...], "allowDomains": [...],
        "allowPorts": [...]}` (every key optional; `info.network_policy`),
        `template`: the name of a server template (`templates()`) whose
        resources, image and network apply to what the other options leave
        out (explicit options win); others are sent as given.
        Raises `Conflict` if the name is taken, `InvalidInput` for bad options
        (an unknown template too).
        """
        v = self._json("POST", "/api/spaces", json=_core.create_body(name, options), timeout=None)
        return Space(self, SpaceInfo.from_json(v["space"]))

    def get(self, name: str) -> "Space":
        """The space called `name`; raises `NotFound`."""
        v = self._json("GET", _core.space_path(name))
        return Space(self, SpaceInfo.from_json(v["space"]))

    def list(self) -> List["Space"]:
        """Every space on the server, newest first."""
        v = self._json("GET", "/api/spaces")
        return [Space(self, SpaceInfo.from_json(s)) for s in v["spaces"]]

    # -- templates and audit ------------------------------------------------

    def templates(self) -> List[TemplateInfo]:
        """Every template of the server (`GET /api/templates`), by name."""
        v = self._json("GET", "/api/templates")
        return [TemplateInfo.from_json(t) for t in v.get("templates", [])]

    def template(self, name: str) -> str:
        """The YAML document of the template `name`; raises `NotFound`."""
        return str(self._json("GET", _core.template_path(name))["yaml"])

    def put_template(self, yaml: str) -> Dict[str, Any]:
        """Adds a template, or replaces the one of the same name (the name is
        the document's `name`); returns it as JSON. Raises `InvalidInput`
        with the server's message for a document it refuses."""
        return dict(self._json("PUT", "/api/templates", json={"yaml": yaml})["template"])

    def delete_template(self, name: str) -> None:
        """Deletes the template `name`; raises `NotFound` (a default one
        comes back when the server restarts)."""
        self.request("DELETE", _core.template_path(name))

    def audit(self, space: Optional[str] = None, limit: int = 200) -> List[AuditEvent]:
        """The last `limit` (1-1000) events of the audit log, oldest first;
        only those of the space `space` when given."""
        v = self._json("GET", "/api/audit", params=_core.audit_params(space, limit))
        return [AuditEvent.from_json(e) for e in v.get("events", [])]

    def close(self) -> None:
        """Closes the HTTP connections."""
        self.http.close()

    def __enter__(self) -> "Clawdspace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Space(SpaceAttrs):
    """A space on a server. Use it as a context manager to destroy it on exit."""

    def __init__(self, client: Clawdspace, info: SpaceInfo) -> None:
        self.client = client
        self.info = info
        self.files = Files(self)

    def _path(self, *rest: str) -> str:
        return _core.space_path(self.info.name, *rest)

    def refresh(self) -> "Space":
        """Fetches the record again (status, lastActivity, ...)."""
        v = self.client._json("GET", self._path())
        self.info = SpaceInfo.from_json(v["space"])
        return self

    def exec(
        self,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[Union[str, bytes]] = None,
        timeout: Optional[float] = None,
        check: bool = False,
    ) -> ExecResult:
        """Runs a command and waits for it.

        A string runs under `sh -c`; a list is the argv. `stdin` is written
        to the command, then EOF. `timeout` (seconds) kills the command's
        process group (`result.timed_out`). Output is trimmed and capped at
        16 MiB a stream (`result.truncated`). `check=True` raises
        `CommandFailed` on a non-zero exit.
        """
        body = _core.exec_body(command, cwd=cwd, env=env, user=user, stdin=stdin, timeout=timeout)
        v = self.client._json("POST", self._path("exec"), json=body, timeout=None)
        result = ExecResult.from_json(v)
        if check and not result.ok:
            raise CommandFailed(result, command)
        return result

    def exec_stream(
        self,
        command: Command,
        *,
        tty: bool = False,
        cols: int = 80,
        rows: int = 24,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[Union[str, bytes]] = None,
    ) -> "ExecStream":
        """Starts a command over the WebSocket; iterate the result for output.

        `tty=True` gives it a terminal of `cols` x `rows` (stdout and stderr
        are then one stream). See `ExecStream` for stdin and resize.
        """
        msg = _core.first_message(
            command, tty=tty, cols=cols, rows=rows, cwd=cwd, env=env, user=user, stdin=stdin
        )
        url = _core.ws_url(self.client.url, self.info.name)
        try:
            ws = ws_connect(
                url,
                additional_headers=_core.auth_headers(self.client.key),
                max_size=None,
                open_timeout=30,
            )
        except InvalidHandshake as e:
            raise _core.handshake_error(e) or ConnectionFailed(f"{url}: {e}") from e
        except OSError as e:
            raise ConnectionFailed(f"{url}: {e}") from e
        # Entering marks the connection as managed (websockets >= 17.1 warns
        # otherwise); ExecStream.close() closes it.
        ws.__enter__()
        ws.send(msg)
        return ExecStream(ws)

    def pause(self) -> None:
        """Freezes every process (`POST .../stop`); `Conflict` if stopped."""
        self.client.request("POST", self._path("stop"), timeout=None)
        self.refresh()

    def resume(self) -> None:
        """Thaws a paused space or starts a stopped one (`POST .../start`)."""
        self.client.request("POST", self._path("start"), timeout=None)
        self.refresh()

    def destroy(self, *, remove_volume: bool = False) -> None:
        """Deletes the space and its files.

        Its `/workspace` volume is kept for a new space of the same name
        unless `remove_volume=True` (leaving a `with` block removes it).
        """
        params = {"removeVolume": "true"} if remove_volume else None
        self.client.request("DELETE", self._path(), params=params, timeout=None)

    def stats(self) -> Dict[str, Any]:
        """Live resource use (`cpuPercent`, `memoryUsageBytes`, ...)."""
        return dict(self.client._json("GET", self._path("stats"))["stats"])

    def observability(self) -> Dict[str, Any]:
        """What the space is doing, read from the host: `stats`,
        `workspaceDisk`, `workspaceSizeBytes`, `top` (busiest processes),
        `bashHistoryTail` (docs/API.md)."""
        return dict(self.client._json("GET", self._path("observability"))["observability"])

    def __enter__(self) -> "Space":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.destroy(remove_volume=True)
        except NotFound:
            pass


class ExecStream:
    """A running command on a WebSocket.

    Iterating yields `Chunk`s (`.stream` is `"stdout"` or `"stderr"`,
    `.data` raw bytes) until the command exits; `exit_code` is then set.
    `write()` feeds stdin, `close_stdin()` sends EOF, `resize()` changes the
    terminal size. Closing the stream (or leaving a `with` block) kills the
    command. A refused command (bad input, stopped space) raises the mapped
    error on first iteration.
    """

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._state = _core.FrameState()
        self._done = False

    @property
    def exit_code(self) -> Optional[int]:
        """The exit status once the command ended, else None."""
        return self._state.exit_code

    @property
    def timed_out(self) -> bool:
        return self._state.timed_out

    def __iter__(self) -> Iterator[Chunk]:
        while not self._done:
            try:
                msg = self._ws.recv()
            except ConnectionClosed:
                self._done = True
                break
            chunk = self._state.decode(msg)
            if chunk is not None:
                yield chunk
        if self._state.exit_code is None:
            raise ConnectionFailed("the connection closed before the command's exit")

    def write(self, data: Union[str, bytes]) -> None:
        """Writes to the command's stdin."""
        try:
            for frame in _core.stdin_frames(data):
                self._ws.send(frame)
        except ConnectionClosed as e:
            raise ConnectionFailed(f"stdin: {e}") from e

    def close_stdin(self) -> None:
        """Closes the command's stdin (it reads end-of-file)."""
        self._send_event({"type": "eof"})

    def resize(self, cols: int, rows: int) -> None:
        """Resizes the terminal (`tty=True` only)."""
        self._send_event({"type": "resize", "cols": int(cols), "rows": int(rows)})

    def _send_event(self, event: Dict[str, Any]) -> None:
        try:
            self._ws.send(json.dumps(event))
        except ConnectionClosed as e:
            raise ConnectionFailed(f"{event['type']}: {e}") from e

    def wait(self) -> ExecResult:
        """Reads the rest of the output; returns it (untrimmed) with the exit code."""
        chunks = list(self)
        out, err = _core.split_result(chunks)
        return ExecResult(out, err, self.exit_code if self.exit_code is not None else -1,
                          timed_out=self.timed_out)

    def close(self) -> None:
        """Ends the session (kills the command if it still runs)."""
        self._done = True
        self._ws.close()

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Files:
    """A space's files, by absolute path (streamed, any size)."""

    def __init__(self, space: Space) -> None:
        self._space = space

    @property
    def _client(self) -> Clawdspace:
        return self._space.client

    def _fs(self, *rest: str) -> str:
        return self._space._path("fs", *rest)

    def read(self, path: str) -> bytes:
        """The file's bytes."""
        return self._client.request("GET", self._fs(), params=_core.fs_params(path), timeout=None).content

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The file decoded as text."""
        return self.read(path).decode(encoding)

    def write(
        self, path: str, data: Union[str, bytes], *, mode: Optional[int] = None, mkdirs: bool = True
    ) -> FileStat:
        """Writes (replaces, atomically) a file; `mkdirs` creates missing parent
        directories; `mode` defaults to 0o644. Returns the file as written."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return self._put(path, raw, mode, mkdirs)

    def upload(
        self,
        local: Union[str, Path, BinaryIO],
        path: str,
        *,
        mode: Optional[int] = None,
        mkdirs: bool = True,
    ) -> FileStat:
        """Streams a local file (a path or a binary file object) to `path`."""
        if isinstance(local, (str, Path)):
            with open(local, "rb") as f:
                return self._put(path, _iter_file(f), mode, mkdirs)
        return self._put(path, _iter_file(local), mode, mkdirs)

    def _put(self, path: str, content: Any, mode: Optional[int], mkdirs: bool) -> FileStat:
        params = _core.fs_params(path, mode=_core.mode_param(mode), mkdirs=mkdirs)
        r = self._client.request("PUT", self._fs(), params=params, content=content, timeout=None)
        return FileStat.from_json(r.json())

    def upload_dir(self, local_dir: Union[str, Path], path: str) -> None:
        """Copies a local directory's contents into `path` (created if missing), as a tar."""
        with _tar.pack(local_dir) as spool:
            self._client.request(
                "PUT", self._space._path("archive"), params=_core.fs_params(path),
                content=_tar.iter_spool(spool), timeout=None,
            )

    def download_dir(self, path: str, local_dir: Union[str, Path]) -> int:
        """Copies the directory `path` into `local_dir`; returns the entries written.

        Only files, directories and symlinks that stay inside `local_dir`
        are written (the archive comes from the space: never trusted).
        """
        with tempfile.TemporaryFile() as spool:
            self._stream_to(self._space._path("archive"), path, spool)
            spool.seek(0)
            return _tar.unpack(spool, local_dir)

    def download(self, path: str, local: Union[str, Path, BinaryIO]) -> int:
        """Streams `path` into a local file (a path or a binary file object); returns its size."""
        if isinstance(local, (str, Path)):
            with open(local, "wb") as f:
                return self._download(path, f)
        return self._download(path, local)

    def _download(self, path: str, out: BinaryIO) -> int:
        return self._stream_to(self._fs(), path, out)

    def _stream_to(self, endpoint: str, path: str, out: BinaryIO) -> int:
        req = self._client.http.build_request(
            "GET", endpoint, params=_core.fs_params(path), timeout=None
        )
        try:
            r = self._client.http.send(req, stream=True)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"download {path}: {e!r}") from e
        try:
            if r.status_code >= 400:
                raise _core.error_from_body(r.status_code, r.read())
            n = 0
            for block in r.iter_bytes(_core.IO_CHUNK):
                out.write(block)
                n += len(block)
            return n
        except httpx.TransportError as e:
            raise ConnectionFailed(f"download {path}: {e!r}") from e
        finally:
            r.close()

    def list(self, path: str = "/") -> List[FileEntry]:
        """Entries of a directory (`GET .../files`; paths relative to /workspace)."""
        v = self._client._json("GET", self._space._path("files"), params={"path": path})
        return [FileEntry.from_json(e) for e in v.get("entries", [])]

    def stat(self, path: str) -> FileStat:
        """Type, size, mode, owner and time of `path`; `NotFound` if it does not exist."""
        return FileStat.from_json(
            self._client._json("GET", self._fs("stat"), params=_core.fs_params(path))
        )

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except NotFound:
            return False

    def remove(self, path: str) -> None:
        """Deletes a file, symlink or directory (with its contents)."""
        self._client.request("DELETE", self._fs(), params=_core.fs_params(path), timeout=None)


def _iter_file(f: BinaryIO) -> Iterator[bytes]:
    while True:
        block = f.read(_core.IO_CHUNK)
        if not block:
            return
        yield block


__all__ = ["Clawdspace", "Space", "ExecStream", "Files", "ClawdspaceError"]

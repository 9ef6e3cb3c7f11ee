"""The asyncio client: `AsyncClawdspace`, `AsyncSpace`, `AsyncFiles`, `AsyncExecStream`.

The same methods as the synchronous client, as coroutines:

>>> async with AsyncClawdspace() as cs:
...     space = await cs.create("demo")
...     async with space:
...         r = await space.exec("echo hi")
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import (
    IO,
    Any,
    AsyncIterator,
    BinaryIO,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Union,
)

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import _core, _tar
from ._core import Command
from ._space_base import SpaceAttrs
from .client import DEFAULT_TIMEOUT
from .config import resolve
from .errors import CommandFailed, ConnectionFailed, NotFound
from .models import (
    AuditEvent,
    Chunk,
    ExecResult,
    FileEntry,
    FileStat,
    SpaceInfo,
    TemplateInfo,
)

_DEFAULT: Any = object()


class AsyncClawdspace:
    """An asyncio client of one Clawdspace server (see `Clawdspace`)."""

    def __init__(
        self,
        url: Optional[str] = None,
        key: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout] = DEFAULT_TIMEOUT,
        event_hooks: Optional[Mapping[str, List[Callable[..., Any]]]] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        max_connections: int = 100,
    ) -> None:
        self.url, self.key = resolve(url, key)
        self.http = httpx.AsyncClient(
            base_url=self.url,
            headers=_core.auth_headers(self.key),
            timeout=timeout,
            event_hooks=dict(event_hooks or {}),
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def request(
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
            r = await self.http.request(
                method, path, json=json, params=params, content=content, **kw
            )
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: {e!r}") from e
        if r.status_code >= 400:
            raise _core.error_from_body(r.status_code, r.content)
        return r

    async def _json(self, method: str, path: str, **kw: Any) -> Dict[str, Any]:
        return _core.json_object(await self.request(method, path, **kw), method, path)

    async def health(self) -> Dict[str, Any]:
        """`GET /api/health`."""
        return await self._json("GET", "/api/health")

    async def system(self) -> Dict[str, Any]:
        """`GET /api/system`."""
        return await self._json("GET", "/api/system")

    async def capabilities(self) -> Dict[str, Any]:
        """`GET /api/system/capabilities`."""
        return await self._json("GET", "/api/system/capabilities")

    async def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document."""
        return await self._json("GET", "/api/openapi.json")

    async def create(self, name: str, **options: Any) -> "AsyncSpace":
        """Creates and starts a space (options as for `Clawdspace.create`)."""
        v = await self._json(
            "POST", "/api/spaces", json=_core.create_body(name, options), timeout=None
        )
        return AsyncSpace(self, SpaceInfo.from_json(v["space"]))

    async def get(self, name: str) -> "AsyncSpace":
        """The space called `name`; raises `NotFound`."""
        v = await self._json("GET", _core.space_path(name))
        return AsyncSpace(self, SpaceInfo.from_json(v["space"]))

    async def list(self) -> List["AsyncSpace"]:
        """Every space on the server, newest first."""
        v = await self._json("GET", "/api/spaces")
        return [AsyncSpace(self, SpaceInfo.from_json(s)) for s in v["spaces"]]

    async def templates(self) -> List[TemplateInfo]:
        """Every template of the server, by name."""
        v = await self._json("GET", "/api/templates")
        return [TemplateInfo.from_json(t) for t in v.get("templates", [])]

    async def template(self, name: str) -> str:
        """The YAML document of the template `name`; raises `NotFound`."""
        return str((await self._json("GET", _core.template_path(name)))["yaml"])

    async def put_template(self, yaml: str) -> Dict[str, Any]:
        """Adds or replaces a template (see `Clawdspace.put_template`)."""
        v = await self._json("PUT", "/api/templates", json={"yaml": yaml})
        return dict(v["template"])

    async def delete_template(self, name: str) -> None:
        """Deletes the template `name`; raises `NotFound`."""
        await self.request("DELETE", _core.template_path(name))

    async def audit(self, space: Optional[str] = None, limit: int = 200) -> List[AuditEvent]:
        """The last `limit` events of the audit log (see `Clawdspace.audit`)."""
        v = await self._json("GET", "/api/audit", params=_core.audit_params(space, limit))
        return [AuditEvent.from_json(e) for e in v.get("events", [])]

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncClawdspace":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncSpace(SpaceAttrs):
    """A space (async). `async with space:` destroys it on exit."""

    def __init__(self, client: AsyncClawdspace, info: SpaceInfo) -> None:
        self.client = client
        self.info = info
        self.files = AsyncFiles(self)

    def _path(self, *rest: str) -> str:
        return _core.space_path(self.info.name, *rest)

    async def refresh(self) -> "AsyncSpace":
        v = await self.client._json("GET", self._path())
        self.info = SpaceInfo.from_json(v["space"])
        return self

    async def exec(
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
        """Runs a command and waits for it (see `Space.exec`)."""
        body = _core.exec_body(command, cwd=cwd, env=env, user=user, stdin=stdin, timeout=timeout)
        v = await self.client._json("POST", self._path("exec"), json=body, timeout=None)
        result = ExecResult.from_json(v)
        if check and not result.ok:
            raise CommandFailed(result, command)
        return result

    async def exec_stream(
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
    ) -> "AsyncExecStream":
        """Starts a command over the WebSocket (see `Space.exec_stream`)."""
        msg = _core.first_message(
            command, tty=tty, cols=cols, rows=rows, cwd=cwd, env=env, user=user, stdin=stdin
        )
        url = _core.ws_url(self.client.url, self.info.name)
        try:
            ws = await ws_connect(
                url,
                additional_headers=_core.auth_headers(self.client.key),
                max_size=None,
                open_timeout=30,
            )
        except InvalidHandshake as e:
            raise _core.handshake_error(e) or ConnectionFailed(f"{url}: {e}") from e
        except OSError as e:
            raise ConnectionFailed(f"{url}: {e}") from e
        await ws.send(msg)
        return AsyncExecStream(ws)

    async def pause(self) -> None:
        """Freezes every process; `Conflict` if stopped."""
        await self.client.request("POST", self._path("stop"), timeout=None)
        await self.refresh()

    async def resume(self) -> None:
        """Thaws a paused space or starts a stopped one."""
        await self.client.request("POST", self._path("start"), timeout=None)
        await self.refresh()

    async def destroy(self, *, remove_volume: bool = False) -> None:
        """Deletes the space and its files (see `Space.destroy`)."""
        params = {"removeVolume": "true"} if remove_volume else None
        await self.client.request("DELETE", self._path(), params=params, timeout=None)

    async def stats(self) -> Dict[str, Any]:
        """Live resource use."""
        return dict((await self.client._json("GET", self._path("stats")))["stats"])

    async def observability(self) -> Dict[str, Any]:
        """What the space is doing (see `Space.observability`)."""
        v = await self.client._json("GET", self._path("observability"))
        return dict(v["observability"])

    async def __aenter__(self) -> "AsyncSpace":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.destroy(remove_volume=True)
        except NotFound:
            pass


class AsyncExecStream:
    """A running command on a WebSocket (async); see `ExecStream`."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._state = _core.FrameState()
        self._done = False

    @property
    def exit_code(self) -> Optional[int]:
        return self._state.exit_code

    @property
    def timed_out(self) -> bool:
        return self._state.timed_out

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        while not self._done:
            try:
                msg = await self._ws.recv()
            except ConnectionClosed:
                self._done = True
                break
            chunk = self._state.decode(msg)
            if chunk is not None:
                yield chunk
        if self._state.exit_code is None:
            raise ConnectionFailed("the connection closed before the command's exit")

    async def write(self, data: Union[str, bytes]) -> None:
        """Writes to the command's stdin."""
        try:
            for frame in _core.stdin_frames(data):
                await self._ws.send(frame)
        except ConnectionClosed as e:
            raise ConnectionFailed(f"stdin: {e}") from e

    async def close_stdin(self) -> None:
        """Closes the command's stdin."""
        await self._send_event({"type": "eof"})

    async def resize(self, cols: int, rows: int) -> None:
        """Resizes the terminal (`tty=True` only)."""
        await self._send_event({"type": "resize", "cols": int(cols), "rows": int(rows)})

    async def _send_event(self, event: Dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(event))
        except ConnectionClosed as e:
            raise ConnectionFailed(f"{event['type']}: {e}") from e

    async def wait(self) -> ExecResult:
        """Reads the rest of the output; returns it (untrimmed) with the exit code."""
        chunks = [c async for c in self]
        out, err = _core.split_result(chunks)
        code = self.exit_code if self.exit_code is not None else -1
        return ExecResult(out, err, code, timed_out=self.timed_out)

    async def close(self) -> None:
        """Ends the session (kills the command if it still runs)."""
        self._done = True
        await self._ws.close()

    async def __aenter__(self) -> "AsyncExecStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncFiles:
    """A space's files (async); see `Files`."""

    def __init__(self, space: AsyncSpace) -> None:
        self._space = space

    @property
    def _client(self) -> AsyncClawdspace:
        return self._space.client

    def _fs(self, *rest: str) -> str:
        return self._space._path("fs", *rest)

    async def read(self, path: str) -> bytes:
        r = await self._client.request(
            "GET", self._fs(), params=_core.fs_params(path), timeout=None
        )
        return r.content

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def write(
        self, path: str, data: Union[str, bytes], *, mode: Optional[int] = None, mkdirs: bool = True
    ) -> FileStat:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return await self._put(path, raw, mode, mkdirs)

    async def upload(
        self,
        local: Union[str, Path, BinaryIO],
        path: str,
        *,
        mode: Optional[int] = None,
        mkdirs: bool = True,
    ) -> FileStat:
        """Streams a local file to `path` (file reads run in a thread)."""
        if isinstance(local, (str, Path)):
            f = await asyncio.to_thread(open, local, "rb")
            try:
                return await self._put(path, _aiter_file(f), mode, mkdirs)
            finally:
                f.close()
        return await self._put(path, _aiter_file(local), mode, mkdirs)

    async def _put(
        self, path: str, content: Any, mode: Optional[int], mkdirs: bool
    ) -> FileStat:
        params = _core.fs_params(path, mode=_core.mode_param(mode), mkdirs=mkdirs)
        r = await self._client.request(
            "PUT", self._fs(), params=params, content=content, timeout=None
        )
        return FileStat.from_json(r.json())

    async def upload_dir(self, local_dir: Union[str, Path], path: str) -> None:
        """Copies a local directory's contents into `path` (see `Files.upload_dir`)."""
        spool = await asyncio.to_thread(_tar.pack, local_dir)
        try:
            await self._client.request(
                "PUT", self._space._path("archive"), params=_core.fs_params(path),
                content=_aiter_file(spool), timeout=None,
            )
        finally:
            spool.close()

    async def download_dir(self, path: str, local_dir: Union[str, Path]) -> int:
        """Copies the directory `path` into `local_dir` (see `Files.download_dir`)."""
        with tempfile.TemporaryFile() as spool:
            await self._stream_to(self._space._path("archive"), path, spool)
            spool.seek(0)
            return await asyncio.to_thread(_tar.unpack, spool, local_dir)

    async def download(self, path: str, local: Union[str, Path, BinaryIO]) -> int:
        """Streams `path` into a local file; returns its size."""
        if isinstance(local, (str, Path)):
            f = await asyncio.to_thread(open, local, "wb")
            try:
                return await self._download(path, f)
            finally:
                f.close()
        return await self._download(path, local)

    async def _download(self, path: str, out: BinaryIO) -> int:
        return await self._stream_to(self._fs(), path, out)

    async def _stream_to(self, endpoint: str, path: str, out: BinaryIO) -> int:
        req = self._client.http.build_request(
            "GET", endpoint, params=_core.fs_params(path), timeout=None
        )
        try:
            r = await self._client.http.send(req, stream=True)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"download {path}: {e!r}") from e
        try:
            if r.status_code >= 400:
                raise _core.error_from_body(r.status_code, await r.aread())
            n = 0
            async for block in r.aiter_bytes(_core.IO_CHUNK):
                await asyncio.to_thread(out.write, block)
                n += len(block)
            return n
        except httpx.TransportError as e:
            raise ConnectionFailed(f"download {path}: {e!r}") from e
        finally:
            await r.aclose()

    async def list(self, path: str = "/") -> List[FileEntry]:
        v = await self._client._json("GET", self._space._path("files"), params={"path": path})
        return [FileEntry.from_json(e) for e in v.get("entries", [])]

    async def stat(self, path: str) -> FileStat:
        return FileStat.from_json(
            await self._client._json("GET", self._fs("stat"), params=_core.fs_params(path))
        )

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
            return True
        except NotFound:
            return False

    async def remove(self, path: str) -> None:
        await self._client.request(
            "DELETE", self._fs(), params=_core.fs_params(path), timeout=None
        )


async def _aiter_file(f: "IO[bytes]") -> AsyncIterator[bytes]:
    while True:
        block = await asyncio.to_thread(f.read, _core.IO_CHUNK)
        if not block:
            return
        yield block

"""Exceptions: one class per API error class, all under `ClawdspaceError`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .models import ExecResult


class ClawdspaceError(Exception):
    """Base of every error the SDK raises.

    `status` is the HTTP status when the server answered (None otherwise),
    `message` the server's `{"error": ...}` text or a description.
    """

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class InvalidInput(ClawdspaceError):
    """400 (or 413): the request was refused; the message says what was wrong."""


class Unauthorized(ClawdspaceError):
    """401: no key or a wrong key."""


class NotFound(ClawdspaceError):
    """404: no such space (or file, or path)."""


class Conflict(ClawdspaceError):
    """409: the space exists already, or is not running."""


class ServerError(ClawdspaceError):
    """5xx: the server or its runtime failed (502: an image registry)."""


class ConnectionFailed(ClawdspaceError):
    """The server could not be reached or the connection broke."""


class CommandFailed(ClawdspaceError):
    """A command exited non-zero and the caller asked for `check=True`.

    `result` is the full `ExecResult`.
    """

    def __init__(self, result: "ExecResult", command: object) -> None:
        detail = result.stderr.strip().splitlines()[-1:] if result.stderr else []
        msg = f"command {command!r} exited with {result.exit_code}"
        if detail:
            msg += f": {detail[0]}"
        super().__init__(msg)
        self.result = result
        self.command = command


def error_for_status(status: int, message: str) -> ClawdspaceError:
    """The exception for an HTTP error status and the server's message."""
    cls: type[ClawdspaceError]
    if status in (400, 413, 422):
        cls = InvalidInput
    elif status in (401, 403):
        cls = Unauthorized
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = Conflict
    elif status >= 500:
        cls = ServerError
    else:
        cls = ClawdspaceError
    return cls(message, status)


def error_for_event(message: str) -> ClawdspaceError:
    """The exception for a WebSocket `error` event (which carries no status)."""
    if message == "Space is not running":
        return Conflict(message, 409)
    if message == "Space not found":
        return NotFound(message, 404)
    return InvalidInput(message, 400)

"""Directory trees as tar streams (`.../archive`), safely on the local side."""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

from .errors import ClawdspaceError


def pack(local_dir: Union[str, Path]) -> IO[bytes]:
    """A tar of the directory's contents, spooled (memory, then a temporary file)."""
    root = Path(local_dir)
    if not root.is_dir():
        raise ClawdspaceError(f"{root} is not a directory")
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    with tarfile.open(fileobj=spool, mode="w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(str(entry), arcname=entry.name)
    spool.seek(0)
    return spool


def unpack(stream: IO[bytes], local_dir: Union[str, Path]) -> int:
    """Extracts a tar stream (from a space: hostile) into `local_dir`; returns the entries.

    Only regular files, directories and symlinks that stay inside are
    written; no entry goes through `..`, an absolute name or a link.
    """
    dest = Path(local_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for m in tar:
            target = _inside(dest, m.name)
            if target is None:
                raise ClawdspaceError(f"archive entry {m.name!r} leaves the directory")
            if m.issym():
                link = (target.parent / m.linkname).resolve() if not os.path.isabs(m.linkname) else None
                if link is None or not _within(dest, link):
                    raise ClawdspaceError(f"archive symlink {m.name!r} points outside")
            elif not (m.isfile() or m.isdir()):
                continue  # devices, fifos, hard links: not written
            _extract(tar, m, target)
            n += 1
    return n


def _within(root: Path, p: Path) -> bool:
    return p == root or root in p.parents


def _inside(root: Path, name: str) -> "Path | None":
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or os.path.isabs(name):
        return None if ".." in parts or os.path.isabs(name) else root
    # Every parent must be a real directory inside (never a symlink).
    cur = root
    for p in parts[:-1]:
        cur = cur / p
        if cur.is_symlink():
            return None
    return root.joinpath(*parts)


def _extract(tar: "tarfile.TarFile", m: tarfile.TarInfo, target: Path) -> None:
    if m.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    if m.issym():
        os.symlink(m.linkname, target)
        return
    src = tar.extractfile(m)
    if src is None:
        return
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            out.write(block)
    os.chmod(target, m.mode & 0o777)


def iter_spool(f: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    while True:
        block = f.read(chunk)
        if not block:
            return
        yield block

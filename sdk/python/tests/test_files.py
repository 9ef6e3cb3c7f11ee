"""Files over the streaming endpoints (`/fs`, `/fs/stat`, `/files`).

Skipped only when the daemon's OpenAPI document lacks those paths (they
arrive with the files endpoints); then they run."""

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

import clawdspace
from clawdspace import InvalidInput, NotFound

from conftest import Daemon, has_path, unique

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _needs_fs(daemon: Daemon):
    if not has_path(daemon, "/api/spaces/{name}/fs"):
        pytest.skip("this daemon's OpenAPI document has no /api/spaces/{name}/fs")


def test_write_read_stat_remove(space: clawdspace.Space):
    f = space.files
    data = bytes(range(256)) * 10
    written = f.write("/home/sandbox/deep/er/blob.bin", data, mode=0o640)
    assert (written.type, written.size, written.mode) == ("file", 2560, 0o640)
    assert f.read("/home/sandbox/deep/er/blob.bin") == data
    assert space.exec("stat -c '%a %s %U' /home/sandbox/deep/er/blob.bin").stdout == "640 2560 sandbox"
    st = f.stat("/home/sandbox/deep/er/blob.bin")
    assert (st.size, st.mode, st.type) == (2560, 0o640, "file")
    assert f.stat("/home/sandbox/deep").type == "dir"
    f.write("/home/sandbox/note.txt", "héllo\n")
    assert f.read_text("/home/sandbox/note.txt") == "héllo\n"
    assert space.exec("cat /home/sandbox/note.txt").stdout == "héllo"
    assert f.exists("/home/sandbox/note.txt")
    f.remove("/home/sandbox/note.txt")
    assert not f.exists("/home/sandbox/note.txt")
    with pytest.raises(NotFound):
        f.read("/home/sandbox/note.txt")


def test_symlinks_stay_inside_the_space(space: clawdspace.Space):
    space.exec("echo inside > /home/sandbox/target; ln -sf /home/sandbox/target /home/sandbox/link;"
               " ln -sf /etc/passwd /home/sandbox/pw")
    assert space.files.read_text("/home/sandbox/link") == "inside\n"
    assert space.files.stat("/home/sandbox/link").link_target == "/home/sandbox/target"
    # An absolute link resolves inside the space: its /etc/passwd, not the host's.
    assert space.files.read_text("/home/sandbox/pw") == space.exec("cat /etc/passwd").stdout + "\n"
    with pytest.raises(InvalidInput):
        space.files.read("relative/path")


def test_list(space: clawdspace.Space):
    space.files.write("/workspace/sdk-list/a.txt", "a")
    space.files.write("/workspace/sdk-list/sub/b.txt", "bb")
    entries = {e.name: e for e in space.files.list("/sdk-list")}
    assert entries["a.txt"].type == "file" and entries["a.txt"].size == 1
    assert entries["sub"].type == "dir"
    assert entries["a.txt"].path == "/sdk-list/a.txt"
    with pytest.raises(NotFound):
        space.files.list("/no-such-dir")


def test_directories_round_trip(space: clawdspace.Space, tmp_path: Path):
    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (src / "pkg" / "sub" / "data.bin").write_bytes(os.urandom(70000))
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o755)
    space.files.upload_dir(src, "/home/sandbox/proj")
    assert space.exec("cd /home/sandbox/proj && ./run.sh && cat pkg/mod.py").stdout == "ran\nX = 1"
    space.exec("ln -s pkg/mod.py /home/sandbox/proj/link; ln -s /etc/passwd /home/sandbox/proj/out")
    dst = tmp_path / "dst"
    with pytest.raises(clawdspace.ClawdspaceError, match="points outside"):
        space.files.download_dir("/home/sandbox/proj", dst)
    space.exec("rm /home/sandbox/proj/out")
    space.files.download_dir("/home/sandbox/proj", dst)
    assert (dst / "pkg" / "sub" / "data.bin").read_bytes() == (src / "pkg" / "sub" / "data.bin").read_bytes()
    assert os.access(dst / "run.sh", os.X_OK)
    assert os.readlink(dst / "link") == "pkg/mod.py"


def test_workspace_volume_kept_unless_removed(client: clawdspace.Clawdspace):
    name = unique("vol")
    s = client.create(name, network="none")
    s.files.write("/workspace/keep.txt", "kept")
    s.destroy()
    s = client.create(name, network="none")
    with s:  # leaving the block removes the volume too
        assert s.files.read_text("/workspace/keep.txt") == "kept"
    with client.create(name, network="none") as s:
        assert not s.files.exists("/workspace/keep.txt")


def test_100_mib_upload_download_sha256(space: clawdspace.Space, tmp_path: Path):
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    with open(src, "wb") as out:
        for _ in range(100):
            block = os.urandom(MIB)
            h.update(block)
            out.write(block)
    want = h.hexdigest()
    t = time.monotonic()
    space.files.upload(src, "/home/sandbox/big.bin")
    up = time.monotonic() - t
    assert space.exec("sha256sum /home/sandbox/big.bin").stdout.split()[0] == want
    dst = tmp_path / "back.bin"
    t = time.monotonic()
    n = space.files.download("/home/sandbox/big.bin", dst)
    down = time.monotonic() - t
    assert n == 100 * MIB
    got = hashlib.sha256()
    with open(dst, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            got.update(block)
    assert got.hexdigest() == want
    print(f"100 MiB: upload {up:.2f} s ({100 / up:.0f} MiB/s), "
          f"download {down:.2f} s ({100 / down:.0f} MiB/s)")
    space.files.remove("/home/sandbox/big.bin")


def test_async_files(daemon: Daemon, space: clawdspace.Space, tmp_path: Path):
    async def main():
        async with daemon.aclient() as cs:
            s = await cs.get(space.name)
            await s.files.write("/home/sandbox/a.txt", b"async")
            assert await s.files.read("/home/sandbox/a.txt") == b"async"
            assert (await s.files.stat("/home/sandbox/a.txt")).size == 5
            src = tmp_path / "up.bin"
            src.write_bytes(os.urandom(3 * MIB + 7))
            await s.files.upload(src, "/home/sandbox/up.bin")
            n = await s.files.download("/home/sandbox/up.bin", tmp_path / "down.bin")
            assert n == 3 * MIB + 7
            assert (tmp_path / "down.bin").read_bytes() == src.read_bytes()
            await s.files.remove("/home/sandbox/a.txt")
            assert not await s.files.exists("/home/sandbox/a.txt")
            with pytest.raises(NotFound):
                await s.files.read("/home/sandbox/a.txt")

    asyncio.run(main())

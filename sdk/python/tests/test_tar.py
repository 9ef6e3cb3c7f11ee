"""The local side of download_dir: a hostile archive cannot write outside (no daemon)."""

import io
import tarfile
from pathlib import Path

import pytest

from clawdspace import ClawdspaceError
from clawdspace._tar import pack, unpack


def _tar(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _file(name, data=b"x"):
    i = tarfile.TarInfo(name)
    i.size = len(data)
    return i, data


def _link(name, target, kind=tarfile.SYMTYPE):
    i = tarfile.TarInfo(name)
    i.type = kind
    i.linkname = target
    return i, None


@pytest.mark.parametrize("members", [
    [_file("../evil")],
    [_file("/abs/evil")],
    [_file("a/../../evil")],
    [_link("l", "/etc")],
    [_link("l", "../..")],
    [_link("d", "."), _link("d/l", "../../evil")],
])
def test_hostile_archives_are_refused(tmp_path: Path, members):
    dest = tmp_path / "dest"
    with pytest.raises(ClawdspaceError):
        unpack(_tar(*members), dest)
    assert not (tmp_path / "evil").exists()


def test_entries_through_a_symlink_are_refused(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    with pytest.raises(ClawdspaceError):
        unpack(_tar(_link("d", "sub"), _file("sub/.keep"), _file("d/f")), dest)
    dest2 = tmp_path / "dest2"
    dest2.mkdir()
    (dest2 / "esc").symlink_to(outside)
    with pytest.raises(ClawdspaceError):
        unpack(_tar(_file("esc/f")), dest2)
    assert list(outside.iterdir()) == []


def test_hard_links_and_devices_are_skipped(tmp_path: Path):
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    members = [_file("f", b"data"), _link("h", "/etc/passwd", tarfile.LNKTYPE), (dev, None)]
    n = unpack(_tar(*members), tmp_path / "d")
    assert n == 1
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["f"]


def test_pack_then_unpack(tmp_path: Path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "b.txt").write_text("b")
    (src / "l").symlink_to("a/b.txt")
    unpack(pack(src), tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b.txt").read_text() == "b"
    assert (tmp_path / "out" / "l").read_text() == "b"

"""WebSocket exec: interleaved output, stdin, PTY resize, errors (sync client)."""

import os
import time

import pytest

import clawdspace
from clawdspace import Clawdspace, Conflict, InvalidInput, NotFound, Unauthorized

from conftest import unique


def test_interleaved_stdout_stderr_in_order(space: clawdspace.Space):
    cmd = "for i in 1 2 3 4; do echo out$i; sleep 0.2; echo err$i >&2; sleep 0.2; done; exit 7"
    with space.exec_stream(cmd) as st:
        chunks = [(c.stream, c.text) for c in st]
    assert st.exit_code == 7
    expected = []
    for i in range(1, 5):
        expected += [("stdout", f"out{i}\n"), ("stderr", f"err{i}\n")]
    # Each line arrives as its own chunk, in the order it was written.
    assert chunks == expected


def test_stdin_is_interactive_then_eof(space: clawdspace.Space):
    with space.exec_stream("while read line; do echo got:$line; done; echo bye >&2") as st:
        it = iter(st)
        st.write("one\n")
        assert next(it).text == "got:one\n"
        st.write(b"two\n")
        assert next(it).text == "got:two\n"
        st.close_stdin()
        rest = list(it)
    assert [c.text for c in rest] == ["bye\n"] and rest[0].stream == "stderr"
    assert st.exit_code == 0


def test_large_binary_stdin_and_wait(space: clawdspace.Space):
    data = os.urandom(3 << 20)
    with space.exec_stream("md5sum; printf x >&2") as st:
        st.write(data)
        st.close_stdin()
        r = st.wait()
    import hashlib

    assert r.stdout.split()[0] == hashlib.md5(data).hexdigest()
    assert (r.stderr, r.exit_code) == ("x", 0)


def test_initial_stdin_and_untrimmed_output(space: clawdspace.Space):
    st = space.exec_stream("cat; echo", stdin="  spaced  ")
    st.close_stdin()
    r = st.wait()
    assert r.stdout == "  spaced  \n" and r.ok


def test_pty_with_resize(space: clawdspace.Space):
    with space.exec_stream("stty size; read x; stty size", tty=True, cols=100, rows=30) as st:
        it = iter(st)
        first = ""
        while "\n" not in first:
            first += next(it).text
        assert first.strip() == "30 100"
        st.resize(120, 40)
        st.write("\n")
        rest = "".join(c.text for c in it)
    assert st.exit_code == 0
    assert rest.strip().splitlines()[-1] == "40 120"
    # a TTY: everything on stdout, with CRLF
    assert "\r\n" in first


def test_stream_errors(daemon, client: Clawdspace, space: clawdspace.Space):
    ghost = clawdspace.Space(client, space.info.__class__.from_json({"name": unique()}))
    with pytest.raises(NotFound):
        ghost.exec_stream("true")
    with Clawdspace(daemon.url, "wrong") as bad:
        with pytest.raises(Unauthorized):
            clawdspace.Space(bad, space.info).exec_stream("true")
    with pytest.raises(InvalidInput, match="Command required"):
        list(space.exec_stream(""))
    with pytest.raises(InvalidInput, match="unknown user"):
        space.exec_stream("true", user="nobodyxyz").wait()


def test_close_kills_the_command(space: clawdspace.Space):
    st = space.exec_stream("echo started; sleep 600")
    assert next(iter(st)).text == "started\n"
    st.close()
    deadline = time.monotonic() + 5
    while space.exec("ps -o args | grep -c '^sleep 600'").stdout != "0":
        assert time.monotonic() < deadline, "the command outlived its socket"
        time.sleep(0.1)


def test_error_events_map_to_exceptions():
    from clawdspace.errors import error_for_event

    assert isinstance(error_for_event("Space is not running"), Conflict)
    assert isinstance(error_for_event("Space not found"), NotFound)
    assert isinstance(error_for_event("Command required"), InvalidInput)

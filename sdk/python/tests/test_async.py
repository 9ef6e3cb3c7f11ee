"""The asyncio client: every method, and 50 execs in parallel."""

import asyncio
import time

import pytest

import clawdspace
from clawdspace import Conflict, NotFound, Unauthorized

from conftest import Daemon, unique


def run(coro):
    return asyncio.run(coro)


def test_async_lifecycle_and_exec(daemon: Daemon):
    async def main():
        async with daemon.aclient() as cs:
            assert (await cs.health())["status"] == "ok"
            assert (await cs.system())["platform"] == "linux"
            assert "gpu" in await cs.capabilities()
            assert "/api/spaces" in (await cs.openapi())["paths"]
            name = unique("async")
            async with await cs.create(name, memory="256m", network="none") as s:
                assert s.status == "running"
                assert (await cs.get(name)).id == s.id
                assert name in [x.name for x in await cs.list()]
                r = await s.exec("echo out; echo err >&2; exit 4")
                assert (r.stdout, r.stderr, r.exit_code) == ("out", "err", 4)
                with pytest.raises(clawdspace.CommandFailed):
                    await s.exec("exit 1", check=True)
                await s.pause()
                assert s.status == "paused"
                await s.resume()
                assert s.status == "running"
                assert (await s.stats())["pids"] >= 1
                with pytest.raises(Conflict):
                    await cs.create(name)
            with pytest.raises(NotFound):
                await cs.get(name)
        async with clawdspace.AsyncClawdspace(daemon.url, "bad") as bad:
            with pytest.raises(Unauthorized):
                await bad.list()

    run(main())


def test_async_stream_stdin_and_pty(daemon: Daemon, space: clawdspace.Space):
    async def main():
        async with daemon.aclient() as cs:
            s = await cs.get(space.name)
            async with await s.exec_stream("echo a; sleep 0.2; echo b >&2; read x; echo got:$x") as st:
                seen = []
                async for c in st:
                    seen.append((c.stream, c.text))
                    if len(seen) == 2:
                        await st.write("zz\n")
            assert seen == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "got:zz\n")]
            assert st.exit_code == 0

            st = await s.exec_stream("stty size; read x; stty size", tty=True, cols=90, rows=20)
            out = ""
            async for c in st:
                out += c.text
                if out.count("\n") == 1:
                    await st.resize(91, 21)
                    await st.write("\n")
            assert out.split() == ["20", "90", "21", "91"]

            st = await s.exec_stream("cat >/dev/null; exit 9")
            await st.close_stdin()
            assert (await st.wait()).exit_code == 9

            with pytest.raises(NotFound):
                await (await cs.get(space.name)).__class__(cs, s.info.__class__.from_json(
                    {"name": unique()})).exec_stream("true")

    run(main())


def test_fifty_execs_in_parallel(daemon: Daemon, space: clawdspace.Space):
    async def main():
        async with daemon.aclient() as cs:
            s = await cs.get(space.name)
            t = time.monotonic()
            results = await asyncio.gather(
                *(s.exec(f"sleep 0.5; echo {i}; echo e{i} >&2") for i in range(50))
            )
            elapsed = time.monotonic() - t
            print(f"50 parallel execs of sleep 0.5: {elapsed:.2f} s")
            return results, elapsed

    results, elapsed = run(main())
    assert [r.stdout for r in results] == [str(i) for i in range(50)]
    assert [r.stderr for r in results] == [f"e{i}" for i in range(50)]
    # In parallel: far less than 50 x 0.5 s in sequence.
    assert elapsed < 12.5

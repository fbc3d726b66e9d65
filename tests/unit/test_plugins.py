"""Plugin process management (seedlink_fast.plugins) with real processes.

Every test runs under the default asyncio loop and under uvloop, inside a
hard deadline; plugins are always stopped (or killed) before a test ends.
"""
import asyncio
import contextlib
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from seedlink_fast import plugins
from seedlink_fast.inifile import PluginConfig
from seedlink_fast.plugins import PluginProcess, describe_status

uvloop = pytest.importorskip("uvloop")

LOGGER = "seedlink_fast.plugins"
DEADLINE = 4.5      # seconds per test, loop included


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """run(coroutine_function): run it on a fresh loop of the wanted kind.

    Fails if the loop's exception handler was called (nothing may escape).
    """
    def runner(fn, *args, deadline=DEADLINE):
        loop = uvloop.new_event_loop() if request.param == "uvloop" else asyncio.new_event_loop()
        escaped = []
        loop.set_exception_handler(lambda _loop, context: escaped.append(context))
        try:
            result = loop.run_until_complete(asyncio.wait_for(fn(*args), deadline))
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()
        assert not escaped, escaped
        return result
    runner.kind = request.param
    return runner


@pytest.fixture(autouse=True)
def no_internal_errors(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    yield
    bad = [r.getMessage() for r in caplog.records
           if r.name == LOGGER and "internal error" in r.getMessage()]
    assert not bad, bad


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    def messages():
        return [r.getMessage() for r in caplog.records if r.name == LOGGER]
    return messages


class Sink:
    """Collects what a plugin sends."""

    def __init__(self):
        self.chunks = []
        self.times = []
        self.eofs = 0
        self.starts = 0
        self.out_of_order = 0

    def on_start(self):
        if self.starts != self.eofs:         # a session starts after the last ended
            self.out_of_order += 1
        self.starts += 1

    def on_data(self, chunk):
        assert isinstance(chunk, bytes) and chunk
        self.chunks.append(chunk)
        self.times.append(time.monotonic())

    def on_eof(self):
        self.eofs += 1

    @property
    def data(self):
        return b"".join(self.chunks)


def config(cmd, name="plug1", timeout=0, start_retry=0, shutdown_wait=2):
    return PluginConfig(name=name, cmd=cmd, timeout=timeout, start_retry=start_retry,
                        shutdown_wait=shutdown_wait)


async def until(predicate, timeout=3.0, what=""):
    """Wait (bounded) until predicate() is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % (what or predicate))
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def plugin(cfg, sink=None, **kwargs):
    """A started PluginProcess; stopped (killed if it must) on the way out."""
    sink = sink if sink is not None else Sink()
    proc = PluginProcess(cfg, sink.on_data, on_start=sink.on_start, on_eof=sink.on_eof,
                         **kwargs)
    await proc.start()
    try:
        yield proc, sink
    finally:
        try:
            await asyncio.wait_for(proc.stop(), 1.0)
        except asyncio.TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.stop(), 1.0)
        assert not proc.running
        assert sink.out_of_order == 0


def own_fds():
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------
# data path
# ---------------------------------------------------------------------------

def test_printf_data_arrives(run, logs):
    async def main():
        async with plugin(config(r"printf 'hello\000world\n' >&63 #")) as (proc, sink):
            await until(lambda: sink.eofs == 1, what="eof")
            await until(lambda: not proc.running, what="exit")
            assert sink.data == b"hello\x00world\n"
            assert proc.exit_description == "terminated"
            assert proc.exit_status == 0 and proc.returncode == 0
            assert proc.bytes_received == 12
    run(main)
    assert "[plug1] starting shell" in logs()
    assert "[plug1] data is available" in logs()
    assert "[plug1] terminated" in logs()


def test_binary_blob_byte_for_byte(run, tmp_path):
    blob = os.urandom(3 * 65536 + 12345) + bytes(range(256)) * 64
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)

    async def main():
        async with plugin(config("cat %s >&63 #" % path)) as (proc, sink):
            await until(lambda: sink.eofs == 1, what="eof")
            assert len(sink.chunks) > 1
            assert sink.data == blob
            assert proc.bytes_received == len(blob)
    run(main)


def test_plugin_name_is_last_argument(run, tmp_path):
    script = tmp_path / "args.sh"
    script.write_text('#!/bin/bash\nprintf "%s\\n" "$#" "$@" >&63\n')
    script.chmod(0o755)

    async def main():
        async with plugin(config("%s --opt 'two words'" % script, name="chain0")) as (_, sink):
            await until(lambda: sink.eofs == 1, what="eof")
            assert sink.data == b"3\n--opt\ntwo words\nchain0\n"
        async with plugin(config("echo run as >&63", name="p_x")) as (_, sink):
            await until(lambda: sink.eofs == 1, what="eof")
            assert sink.data == b"run as p_x\n"
    run(main)


def test_only_fd_63_is_added(run, monkeypatch):
    # inheritable fds below and above 63 must not reach the plugin
    leak_low = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(leak_low, True)
    leak_high = fcntl.fcntl(leak_low, fcntl.F_DUPFD, 64)    # inheritable dup >= 64
    cmd = "ls /proc/$$/fd >&63; readlink /proc/$$/fd/63 >&63; :"

    async def main():
        for use_close_range in (True, False):
            if not use_close_range:          # the /proc/self/fd fallback
                monkeypatch.setattr(plugins, "_SYS_CLOSE_RANGE", -1)
            async with plugin(config(cmd)) as (_, sink):
                await until(lambda: sink.eofs == 1, what="eof")
                lines = sink.data.decode().split()
                assert sorted(lines[:-1], key=int) == ["0", "1", "2", "63"]
                assert lines[-1].startswith("pipe:[")
    try:
        assert leak_low in own_fds() and leak_high in own_fds()
        run(main)
    finally:
        os.close(leak_low)
        os.close(leak_high)


def test_signal_state_of_child(run):
    cmd = "exec grep -E '^Sig(Blk|Ign)' /proc/self/status >&63 #"

    async def main():
        async with plugin(config(cmd)) as (_, sink):
            await until(lambda: sink.eofs == 1, what="eof")
            fields = dict(line.split(":") for line in sink.data.decode().splitlines())
            assert int(fields["SigBlk"], 16) == 0                      # mask cleared
            assert int(fields["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1))  # as SeisComP
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        run(main)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_background_child_keeps_session(run, logs):
    # the shell exits at once; its background child still writes to fd 63
    cmd = "(sleep 0.4; printf late >&63) & printf early >&63; exit 0 #"

    async def main():
        async with plugin(config(cmd)) as (proc, sink):
            await until(lambda: sink.data == b"early", what="early data")
            assert proc.running
            await until(lambda: not proc.running, what="exit")
            assert sink.data == b"earlylate" and sink.eofs == 1
            assert proc.exit_description == "terminated"
    run(main)


# ---------------------------------------------------------------------------
# restart policy
# ---------------------------------------------------------------------------

def test_start_retry_zero_never_restarts(run, logs):
    async def main():
        async with plugin(config("exit 3 #", start_retry=0)) as (proc, _):
            await until(lambda: not proc.running, what="exit")
            await asyncio.sleep(0.5)
            assert proc.starts == 1 and proc.restarts == 0
            assert not proc.running and proc.supervising
            assert proc.exit_description == "terminated with error status 3"
            assert proc.returncode == 3
    run(main)
    assert "[plug1] terminated with error status 3" in logs()


def test_start_retry_restarts_after_exit(run, logs):
    async def main():
        cfg = config("printf x >&63; exit 2 #", start_retry=1)
        async with plugin(cfg) as (proc, sink):
            await until(lambda: len(sink.chunks) >= 2, what="second start")
            assert proc.restarts >= 1
            gap = sink.times[1] - sink.times[0]
            assert 0.9 <= gap < 2.0, gap
    run(main)
    assert "[plug1] terminated with error status 2" in logs()
    assert logs().count("[plug1] starting shell") >= 2


def test_restart_is_immediate(run, logs):
    async def main():
        cfg = config("printf x >&63; exec sleep 30 #", start_retry=30)
        async with plugin(cfg) as (proc, sink):
            await until(lambda: sink.chunks, what="data")
            first_pid = proc.pid
            t0 = time.monotonic()
            proc.restart()
            await until(lambda: len(sink.chunks) == 2, what="restart")
            assert time.monotonic() - t0 < 1.0
            assert proc.pid != first_pid and proc.restarts == 1 and sink.eofs == 1
            assert sink.starts == 2
            assert proc.exit_description == "terminated on signal 15"
    run(main)
    assert "[plug1] terminated on signal 15" in logs()


def test_restart_starts_a_dead_plugin(run):
    async def main():
        async with plugin(config("printf x >&63 #", start_retry=0)) as (proc, sink):
            await until(lambda: not proc.running and sink.eofs == 1, what="exit")
            proc.restart()
            await until(lambda: len(sink.chunks) == 2, what="restart")
            assert proc.starts == 2
    run(main)


# ---------------------------------------------------------------------------
# timeout, shutdown, stop
# ---------------------------------------------------------------------------

def test_timeout_kills_silent_plugin(run, logs):
    async def main():
        async with plugin(config("exec sleep 30 #", timeout=1)) as (proc, _):
            t0 = time.monotonic()
            await until(lambda: not proc.running, what="timeout")
            assert 0.9 <= time.monotonic() - t0 < 2.0
            assert proc.exit_description == "terminated on signal 15"
    run(main)
    assert "[plug1] timeout" in logs()


def test_timeout_spares_a_talking_plugin(run, logs):
    async def main():
        cmd = "while :; do printf x >&63; sleep 0.2; done #"
        async with plugin(config(cmd, timeout=1)) as (proc, sink):
            await asyncio.sleep(1.6)
            assert proc.running and proc.starts == 1 and len(sink.chunks) >= 5
    run(main)
    assert "[plug1] timeout" not in logs()


def test_shutdown_wait_escalates_to_sigkill(run, logs):
    async def main():
        cmd = "trap '' TERM; printf ready >&63; exec sleep 30 #"
        async with plugin(config(cmd, shutdown_wait=1)) as (proc, sink):
            await until(lambda: sink.chunks, what="ready")
            t0 = time.monotonic()
            await proc.stop()
            assert 0.9 <= time.monotonic() - t0 < 2.0
            assert proc.exit_description == "terminated on signal 9"
            assert proc.returncode == -9
    run(main)
    assert "[plug1] shutdown time expired" in logs()
    assert "[plug1] terminated on signal 9" in logs()


def test_shutdown_wait_zero_waits(run):
    async def main():
        cmd = "trap '' TERM; printf ready >&63; exec sleep 30 #"
        async with plugin(config(cmd, shutdown_wait=0)) as (proc, sink):
            await until(lambda: sink.chunks, what="ready")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(proc.stop(), 0.5)
            assert proc.running
            proc.kill()
            await proc.stop()
            assert proc.exit_description == "terminated on signal 9"
    run(main)


def test_stop_is_clean(run, logs):
    async def main():
        before = own_fds()
        cfg = config("printf x >&63; exec sleep 30 #", start_retry=1)
        async with plugin(cfg) as (proc, sink):
            await until(lambda: sink.chunks, what="data")
            pid = proc.pid
            await proc.stop()
            assert not proc.running and not proc.supervising and proc.pid is None
            assert proc.exit_description == "terminated on signal 15"
            assert sink.eofs == 1
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)                         # reaped
            await proc.stop()                           # idempotent
            await asyncio.sleep(1.2)                    # past start_retry
            assert proc.starts == 1
        assert own_fds() == before
    run(main)
    assert "[plug1] unexpected eof" not in logs()


def test_stop_while_waiting_for_retry(run):
    async def main():
        async with plugin(config("exit 0 #", start_retry=30)) as (proc, _):
            await until(lambda: not proc.running, what="exit")
            t0 = time.monotonic()
            await proc.stop()
            assert time.monotonic() - t0 < 0.1 and not proc.supervising
            await proc.start()                          # can be started again
            assert proc.starts == 2
    run(main)


def test_eof_while_alive_terminates(run, logs):
    async def main():
        cmd = "printf x >&63; exec 63>&-; exec sleep 30 #"
        async with plugin(config(cmd)) as (proc, sink):
            await until(lambda: not proc.running, what="exit")
            assert sink.eofs == 1
            assert proc.exit_description == "terminated on signal 15"
    run(main)
    assert "[plug1] unexpected eof" in logs()


# ---------------------------------------------------------------------------
# faults stay with the plugin
# ---------------------------------------------------------------------------

def test_protocol_error(run, logs):
    async def main():
        cmd = "while :; do printf x >&63; sleep 0.05; done #"
        async with plugin(config(cmd, start_retry=1)) as (proc, sink):
            await until(lambda: sink.chunks, what="data")
            proc.protocol_error("invalid data type")
            seen = len(sink.chunks)
            await until(lambda: not proc.running, what="exit")
            await asyncio.sleep(0.1)
            assert len(sink.chunks) == seen                  # rest of session dropped
            assert proc.exit_description == "terminated on signal 15"
            await until(lambda: len(sink.chunks) > seen, what="restart")
            assert proc.restarts == 1
    run(main)
    assert "[plug1] invalid data type" in logs()


def test_on_data_exception_is_contained(run, logs):
    def bad(chunk):
        raise ValueError("broken parser")

    async def main():
        proc = PluginProcess(config("printf x >&63; exec sleep 30 #"), bad)
        await proc.start()
        try:
            await until(lambda: not proc.running, what="exit")
            assert proc.exit_description == "terminated on signal 15"
        finally:
            await proc.stop()
    run(main)
    assert "[plug1] error while handling plugin data" in logs()


def test_spawn_failure_is_contained(run, logs, monkeypatch):
    monkeypatch.setattr(plugins, "SHELL", "/nonexistent/bash")

    async def main():
        async with plugin(config("true", start_retry=1)) as (proc, _):
            assert not proc.running and proc.starts == 0
            await asyncio.sleep(1.2)
            assert not proc.running
    run(main)
    assert logs().count("[plug1] starting shell") == 2
    assert sum("cannot start plugin" in m for m in logs()) == 2


def test_missing_command(run, logs):
    async def main():
        async with plugin(config("/nonexistent/plugin")) as (proc, _):
            await until(lambda: not proc.running, what="exit")
            assert proc.exit_description == "terminated with error status 127"
    run(main)


def test_flood_does_not_starve_the_loop(run):
    async def main():
        flood = Sink()
        flood.on_data = lambda chunk: None      # count only (bytes_received)
        slow_sink = Sink()
        lateness = []

        async def ticker():
            for _ in range(10):
                t0 = time.monotonic()
                await asyncio.sleep(0.05)
                lateness.append(time.monotonic() - t0 - 0.05)

        async with plugin(config("exec cat /dev/zero >&63 #", name="flood"),
                          flood) as (fproc, _):
            async with plugin(config("while :; do printf y >&63; sleep 0.05; done #",
                                     name="slow"), slow_sink):
                await ticker()
            assert fproc.bytes_received > 10_000_000
        assert max(lateness) < 0.25, lateness
        assert len(slow_sink.chunks) >= 4
    run(main)


# ---------------------------------------------------------------------------
# dies with the server
# ---------------------------------------------------------------------------

HOST = r"""
import asyncio, sys
from seedlink_fast.inifile import PluginConfig
from seedlink_fast.plugins import PluginProcess

async def main():
    proc = PluginProcess(PluginConfig(name="orphan", cmd="exec sleep 60 #"), lambda b: None)
    await proc.start()
    print(proc.pid, flush=True)
    await asyncio.sleep(60)

if sys.argv[1] == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
loop.run_until_complete(main())
"""


def _gone_or_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")          # our init may not reap orphans


def test_plugin_dies_with_the_server(run):
    host = subprocess.Popen([sys.executable, "-c", HOST, run.kind], stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([host.stdout], [], [], 3.0)
        assert ready, "host did not start its plugin"
        pid = int(host.stdout.readline())
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            assert b"sleep" in fh.read()
        assert not _gone_or_zombie(pid)
        host.kill()
        host.wait(2)
        deadline = time.monotonic() + 2.0
        while not _gone_or_zombie(pid):
            assert time.monotonic() < deadline, "plugin survived its server"
            time.sleep(0.01)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        host.stdout.close()


# ---------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------

def test_describe_status():
    assert describe_status(0) == "terminated"
    assert describe_status(None) == "terminated"
    assert describe_status(3 << 8) == "terminated with error status 3"
    assert describe_status(signal.SIGKILL) == "terminated on signal 9"


def test_without_pidfd(run, logs, monkeypatch):
    """Exit watching falls back to a waitid(WNOWAIT) thread."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)

    async def main():
        cmd = "(sleep 0.3; printf late >&63) & printf early >&63; exit 4 #"
        async with plugin(config(cmd, start_retry=30)) as (proc, sink):
            await until(lambda: not proc.running, what="exit")
            assert sink.data == b"earlylate"
            assert proc.exit_description == "terminated with error status 4"
            proc.restart()
            await until(lambda: sink.eofs == 2 and not proc.running, what="second run")
            assert sink.data == b"earlylate" * 2 and proc.restarts == 1
            assert sink.starts == 2
        async with plugin(config("printf x >&63; exec sleep 30 #")) as (proc, sink):
            await until(lambda: sink.chunks, what="data")
            await proc.stop()
            assert proc.exit_description == "terminated on signal 15"
    run(main)


def test_start_during_stop_restarts(run):
    async def main():
        cmd = "trap '' TERM; printf ready >&63; exec sleep 30 #"
        async with plugin(config(cmd, shutdown_wait=1, start_retry=30)) as (proc, sink):
            await until(lambda: sink.chunks, what="ready")
            stopping = asyncio.ensure_future(proc.stop())
            await asyncio.sleep(0.1)
            await proc.start()                 # changes its mind
            await asyncio.wait_for(stopping, 2.0)   # stop() still returns at the exit
            await until(lambda: len(sink.chunks) == 2, what="second start")
            assert proc.supervising and proc.running and proc.restarts == 1
    run(main)


def test_hook_exceptions_are_contained(run, logs):
    def boom():
        raise RuntimeError("hook failed")

    async def main():
        got = []
        proc = PluginProcess(config("printf x >&63 #"), got.append)
        proc.on_start = proc.on_eof = boom          # set as attributes
        await proc.start()
        try:
            await until(lambda: not proc.running, what="exit")
            assert got == [b"x"]
        finally:
            await proc.stop()
    run(main)
    assert sum("error in boom handler" in m for m in logs()) == 2

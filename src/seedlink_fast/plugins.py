"""Plugin processes: start them, read their fd 63 pipe, supervise and restart.

One :class:`PluginProcess` runs one ``plugin`` definition of seedlink.ini the
way SeisComP's ``seedlink`` does (``Plugin`` in apps/seedlink/seedlink.cc)::

    proc = PluginProcess(config, on_data=parser.feed, on_eof=parser.reset)
    await proc.start()          # runs and keeps supervising
    ...
    proc.restart()              # SIGHUP semantics
    await proc.stop()           # SIGTERM, SIGKILL after shutdown_wait, reaped

Behaviour shared with SeisComP:

* The plugin runs as ``/bin/bash -c "<cmd> <name>"`` (the plugin name is
  appended as the last word), in the server's process group, with the
  server's stdin/stdout/stderr and environment, and the write end of a pipe
  as **fd 63**.  The server keeps the read end non-blocking.
* Every byte read is handed to ``on_data`` in chunks that may split packets
  anywhere; framing is the caller's business.
* EOF on the pipe (or a read error) ends the plugin's session: SIGTERM if the
  process is still alive.  ``timeout`` > 0 and no bytes for ``timeout``
  seconds: "[name] timeout", SIGTERM.  After any SIGTERM, if the plugin is
  still there after ``shutdown_wait`` seconds (> 0): "[name] shutdown time
  expired", SIGKILL (0 = wait for ever).
* The process is reaped only after its pipe is closed, so signals never hit a
  recycled pid.  If the shell exits while a background child still holds
  fd 63, the session goes on (SeisComP does not notice either) until EOF or,
  after a shutdown, until ``shutdown_wait`` expires and the pipe is given up.
* After the reap the exit is logged as "[name] terminated on signal N",
  "[name] terminated with error status N" or "[name] terminated", and the
  plugin is started again after ``start_retry`` seconds; **0 means never**.
* :meth:`restart` is SIGHUP: SIGTERM now and start again right after the
  exit, bypassing ``start_retry`` (also starts a plugin that is not running).
* Other log lines as in SeisComP: "[name] starting shell", "[name] data is
  available" (first bytes of a session), "[name] unexpected eof" (EOF after
  data with no shutdown requested), "[name] read error (...)".
* The plugin inherits SIGPIPE ignored, as from SeisComP's server.

Differences (all deliberate):

* The child gets ``PR_SET_PDEATHSIG = SIGKILL``, so plugins die with the
  server even on ``kill -9`` (SeisComP's seedlink.cc does not do this).  The
  signal is tied to the *thread* that started the plugin, so plugins must be
  started from the event-loop thread (as :meth:`start` does), never from a
  short-lived worker thread.
* Only fds 0, 1, 2 and 63 reach the plugin (SeisComP leaks every server fd
  not marked close-on-exec); the signal mask is cleared.
* A plugin that cannot be started (no ``/bin/bash``, out of fds or memory)
  is logged and retried after ``start_retry``; SeisComP's server exits.
* After :meth:`protocol_error` the rest of that session's bytes are read and
  dropped (the caller's framing cannot be trusted any more); SeisComP keeps
  passing packets after a bad packet type.  A pending SIGHUP restart is not
  cancelled by a later protocol error.
* Timers are exact (SeisComP checks them about once a second), and a repeated
  SIGTERM request does not push the SIGKILL deadline back.
* An exception from ``on_data`` is logged and handled like a protocol error;
  nothing raised by a plugin's behaviour escapes into the event loop.

Linux only.  Works with the default asyncio loop and with uvloop: the pipe
and the child's pidfd are watched with ``loop.add_reader``; without pidfd
support a daemon thread waits for the exit (``waitid`` with ``WNOWAIT``).
"""

import asyncio
import ctypes
import functools
import logging
import os
import signal
import subprocess
import threading
from typing import Callable, Optional

from .inifile import PluginConfig

__all__ = ["PLUGIN_FD", "SHELL", "PluginProcess", "describe_status"]

#: File descriptor the plugin writes its packets to.
PLUGIN_FD = 63

#: Shell that runs ``<cmd> <name>`` (module attribute so tests can change it).
SHELL = "/bin/bash"

#: Bytes read from a pipe per readiness event (one read, then back to the loop).
READ_SIZE = 65536

# Bound of the final drain of a pipe that is given up after SIGKILL.
_DRAIN_READS = 32

_PR_SET_PDEATHSIG = 1
_SYS_CLOSE_RANGE = 436          # same number on every Linux architecture
_CLOSE_RANGE_CLOEXEC = 4        # Linux >= 5.11
_SIG_IGN = 1

_LOG = logging.getLogger("seedlink_fast.plugins")


# ---------------------------------------------------------------------------
# Child side (runs between fork and exec: keep it small, no allocation-heavy
# work, no locks)
# ---------------------------------------------------------------------------

class _Libc:
    """The few libc entry points the child needs, resolved in the parent."""

    def __init__(self):
        libc = ctypes.CDLL(None, use_errno=True)
        self.prctl = libc.prctl
        self.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                               ctypes.c_ulong, ctypes.c_ulong]
        self.prctl.restype = ctypes.c_int
        self.syscall = libc.syscall
        self.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                 ctypes.c_long]
        self.syscall.restype = ctypes.c_long
        self.signal = libc.signal
        self.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.signal.restype = ctypes.c_void_p


_libc_cache = []


def _get_libc():
    if not _libc_cache:
        try:
            _libc_cache.append(_Libc())
        except (OSError, AttributeError):        # pragma: no cover - not glibc/Linux
            _libc_cache.append(None)
    return _libc_cache[0]


def _cloexec_all_but_plugin_fd(libc):
    """Mark every fd above 2 except PLUGIN_FD close-on-exec.

    Close-on-exec rather than close, so subprocess's own error pipe keeps
    working up to the exec.
    """
    if libc is not None:
        if (libc.syscall(_SYS_CLOSE_RANGE, 3, PLUGIN_FD - 1, _CLOSE_RANGE_CLOEXEC) == 0
                and libc.syscall(_SYS_CLOSE_RANGE, PLUGIN_FD + 1, 0xFFFFFFFF,
                                 _CLOSE_RANGE_CLOEXEC) == 0):
            return
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:                              # pragma: no cover - no /proc
        fds = range(3, min(os.sysconf("SC_OPEN_MAX"), 65536))
    for fd in fds:
        if fd > 2 and fd != PLUGIN_FD:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _child_setup(write_fd, parent_pid, libc):
    """preexec_fn: pipe to fd 63, nothing else leaked, die with the parent."""
    if write_fd != PLUGIN_FD:
        os.dup2(write_fd, PLUGIN_FD)             # inheritable by default
        os.close(write_fd)
    else:
        os.set_inheritable(PLUGIN_FD, True)
    _cloexec_all_but_plugin_fd(libc)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if libc is not None:
        libc.signal(signal.SIGPIPE, _SIG_IGN)    # inherited like from SeisComP
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        # the server died before PR_SET_PDEATHSIG was in place
        os.kill(os.getpid(), signal.SIGKILL)


def _wait_exit_thread(pid, notify):
    """Fallback exit watcher: wait without reaping, then notify the loop."""
    try:
        while True:
            try:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                break
            except InterruptedError:             # pragma: no cover
                continue
    except OSError:
        pass                                     # ECHILD: reaped elsewhere
    notify()


def describe_status(status):
    """SeisComP's wording for a waitpid status (None: unknown -> "terminated")."""
    if status is not None:
        if os.WIFSIGNALED(status):
            return "terminated on signal %d" % os.WTERMSIG(status)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
            return "terminated with error status %d" % os.WEXITSTATUS(status)
    return "terminated"


# ---------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------

def _guarded(method):
    """Event-loop callback wrapper: log an unexpected error, never raise it."""
    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except Exception:
            self.log.exception("[%s] internal error in %s", self.name, method.__name__)
    return wrapper


class PluginProcess:
    """One supervised plugin process and the pipe it writes to.

    ``on_data(chunk)`` gets every chunk read from fd 63 (bytes, never empty).
    Two optional hooks (keyword arguments, or set the attributes later):
    ``on_start()`` is called each time a plugin process has been started,
    before its first ``on_data``; ``on_eof()`` once at the end of each
    session's data stream, after its last ``on_data`` (a partial packet then
    left in the caller's buffer is garbage and must be dropped).  Exceptions
    from the hooks are logged and otherwise ignored.

    Attributes: ``running`` (a plugin process exists), ``pid``, ``exit_status``
    (raw wait status of the last exit, None if unknown or none yet),
    ``returncode`` (like :mod:`subprocess`: negative signal number),
    ``exit_description`` ("terminated ..."), ``starts``, ``restarts``
    (``starts - 1`` once started), ``bytes_received``.
    """

    def __init__(self, config: PluginConfig, on_data: Callable[[bytes], None], *,
                 on_start: Optional[Callable[[], None]] = None,
                 on_eof: Optional[Callable[[], None]] = None,
                 loop: Optional[asyncio.AbstractEventLoop] = None,
                 log: logging.Logger = _LOG):
        self.config = config
        self.name = config.name
        self.log = log
        self._on_data = on_data
        self.on_start = on_start
        self.on_eof = on_eof
        self._loop = loop

        # supervision
        self._supervising = False      # between start() and the end of stop()
        self._stopping = False
        self._retry_handle = None
        self._stop_waiters = []

        # current session
        self._session = 0
        self._proc = None
        self._pid = None
        self._rfd = -1
        self._pidfd = -1
        self._exited = False           # exited, not reaped yet
        self._shutdown_requested = False
        self._restart_requested = False
        self._kill_sent = False
        self._discard = False
        self._data_seen = False
        self._last_read = 0.0
        self._timeout_handle = None
        self._kill_handle = None

        # results
        self.exit_status = None
        self.returncode = None
        self.exit_description = None
        self.starts = 0
        self.restarts = 0
        self.bytes_received = 0

    def __repr__(self):
        return "<PluginProcess %s pid=%s running=%s restarts=%d>" % (
            self.name, self._pid, self.running, self.restarts)

    # -- public API ---------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while a plugin process exists (started and not yet reaped)."""
        return self._pid is not None

    @property
    def pid(self) -> Optional[int]:
        return self._pid

    @property
    def supervising(self) -> bool:
        """True between :meth:`start` and the end of :meth:`stop`."""
        return self._supervising

    async def start(self) -> None:
        """Start the plugin and keep supervising it (no-op if already started)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self._supervising and not self._stopping:
            return
        self._supervising = True
        self._stopping = False
        if self._pid is not None:
            # start() during an unfinished stop(): come back right after the exit
            self._restart_requested = True
        else:
            self._spawn()

    async def stop(self) -> None:
        """SIGTERM, SIGKILL after ``shutdown_wait`` (> 0), wait for the exit.

        No restart afterwards.  With ``shutdown_wait`` = 0 this waits for as
        long as the plugin takes; wrap it in :func:`asyncio.wait_for` and call
        :meth:`kill` if that is not wanted.
        """
        if not self._supervising and self._pid is None:
            return
        first = not self._stopping
        self._stopping = True
        self._restart_requested = False
        self._cancel_retry()
        if self._pid is None:
            self._supervising = False
            return
        fut = self._loop.create_future()
        self._stop_waiters.append(fut)
        if first:
            self._shutdown()
        try:
            await fut
        finally:
            if fut in self._stop_waiters:
                self._stop_waiters.remove(fut)

    def restart(self) -> None:
        """SIGHUP semantics: SIGTERM now, start again right after the exit."""
        if not self._supervising or self._stopping:
            return
        self.log.info("[%s] restarting", self.name)
        if self._pid is not None:
            self._shutdown(restart=True)
        else:
            self._cancel_retry()
            self._retry_handle = self._loop.call_soon(self._spawn)

    def protocol_error(self, reason) -> None:
        """The caller found bad data: log, drop the rest, SIGTERM, retry later."""
        self.log.error("[%s] %s", self.name, reason)
        if self._pid is None:
            return
        self._discard = True
        self._shutdown()

    def kill(self) -> None:
        """SIGKILL the plugin now (ends a stop() with shutdown_wait = 0)."""
        if self._pid is None:
            return
        self._shutdown_requested = True
        self._send_kill()

    # -- starting -----------------------------------------------------------

    def _cancel_retry(self):
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None

    def _schedule_retry(self):
        retry = self.config.start_retry
        if retry > 0 and self._supervising and not self._stopping:
            self._retry_handle = self._loop.call_later(retry, self._spawn)

    @_guarded
    def _spawn(self):
        self._retry_handle = None
        if not self._supervising or self._stopping or self._pid is not None:
            return
        name = self.name
        self.log.info("[%s] starting shell", name)
        try:
            rfd, wfd = os.pipe()                 # both close-on-exec
        except OSError as exc:
            self.log.error("[%s] cannot start plugin: %s", name, exc)
            self._schedule_retry()
            return
        try:
            proc = subprocess.Popen(
                [SHELL, "-c", "%s %s" % (self.config.cmd, name)],
                close_fds=False,   # _child_setup does it (fd 63 must survive)
                restore_signals=True,
                preexec_fn=functools.partial(_child_setup, wfd, os.getpid(), _get_libc()))
        except Exception as exc:
            os.close(rfd)
            self.log.error("[%s] cannot start plugin: %s", name, exc)
            self._schedule_retry()
            return
        finally:
            os.close(wfd)

        self._session += 1
        self._proc = proc
        self._pid = proc.pid
        self._rfd = rfd
        self._exited = False
        self._shutdown_requested = False
        self._restart_requested = False
        self._kill_sent = False
        self._discard = False
        self._data_seen = False
        self.starts += 1
        self.restarts = self.starts - 1
        loop = self._loop
        self._last_read = loop.time()
        os.set_blocking(rfd, False)
        loop.add_reader(rfd, self._on_readable)
        self._watch_exit()
        if self.config.timeout > 0:
            self._timeout_handle = loop.call_at(self._last_read + self.config.timeout,
                                                self._check_timeout)
        self._hook(self.on_start)

    def _hook(self, hook):
        if hook is not None:
            try:
                hook()
            except Exception:
                self.log.exception("[%s] error in %s handler", self.name,
                                   getattr(hook, "__name__", "a"))

    def _watch_exit(self):
        pid, session = self._pid, self._session
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = -1
        if pidfd >= 0:
            try:
                self._loop.add_reader(pidfd, self._on_pidfd)
                self._pidfd = pidfd
                return
            except Exception:                    # pragma: no cover
                os.close(pidfd)
        loop = self._loop

        def notify():
            try:
                loop.call_soon_threadsafe(self._on_exit_notify, session)
            except RuntimeError:                 # loop closed
                pass

        threading.Thread(target=_wait_exit_thread, args=(pid, notify), daemon=True,
                         name="plugin-%s-wait" % self.name).start()

    # -- reading ------------------------------------------------------------

    def _on_readable(self):
        # the real-time path: one wrapper frame less than @_guarded (_got
        # catches what on_data raises; the rest is guarded in _end_of_pipe)
        try:
            data = os.read(self._rfd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end_of_pipe(exc)
            return
        if not data:
            self._end_of_pipe(None)
            return
        self._got(data)
        self._last_read = self._loop.time()     # after the data went on: no delay for it

    @_guarded
    def _end_of_pipe(self, exc):
        """A read error (exc) or EOF (None) ends the session's stream."""
        if exc is not None:
            self.log.warning("[%s] read error (%s)", self.name, os.strerror(exc.errno))
        elif self._data_seen and not self._shutdown_requested and not self._kill_sent:
            self.log.warning("[%s] unexpected eof", self.name)
        self._close_pipe()
        self._after_pipe_closed()

    def _got(self, data):
        self.bytes_received += len(data)
        if not self._data_seen:
            self._data_seen = True
            self.log.info("[%s] data is available", self.name)
        if self._discard:
            return
        try:
            self._on_data(data)
        except Exception:
            self.log.exception("[%s] error while handling plugin data", self.name)
            if self._pid is not None and not self._discard:
                self._discard = True
                self._shutdown()

    def _close_pipe(self):
        rfd = self._rfd
        if rfd < 0:
            return
        self._rfd = -1
        try:
            self._loop.remove_reader(rfd)
        finally:
            os.close(rfd)
        self._hook(self.on_eof)

    def _abandon_pipe(self):
        """Give the pipe up (plugin killed): take what is buffered, then close."""
        for _ in range(_DRAIN_READS):
            if self._rfd < 0:
                break
            try:
                data = os.read(self._rfd, READ_SIZE)
            except OSError:
                break
            if not data:
                break
            self._got(data)
        self._close_pipe()

    def _after_pipe_closed(self):
        if self._pid is None:
            return
        if self._exited:
            self._reap()
        elif not self._shutdown_requested:
            self._shutdown()

    # -- stopping -----------------------------------------------------------

    def _shutdown(self, restart=False):
        """SeisComP's Plugin::shutdown(): SIGTERM and arm the SIGKILL deadline."""
        if restart:
            self._restart_requested = True
        self._shutdown_requested = True
        if self._pid is None:
            return
        if not self._exited and not self._kill_sent:
            self._signal(signal.SIGTERM)
        wait = self.config.shutdown_wait
        if wait > 0 and self._kill_handle is None:
            self._kill_handle = self._loop.call_later(wait, self._on_kill_deadline)

    def _signal(self, signum):
        try:
            os.kill(self._pid, signum)
        except ProcessLookupError:
            pass
        except OSError as exc:
            self.log.error("[%s] cannot send signal %d: %s", self.name, signum, exc)

    def _send_kill(self):
        self._kill_sent = True
        if self._exited:
            # only a background child holds the pipe
            self._abandon_pipe()
            self._reap()
        else:
            self._signal(signal.SIGKILL)

    @_guarded
    def _check_timeout(self):
        self._timeout_handle = None
        if self._pid is None or self._rfd < 0 or self._shutdown_requested:
            return
        due = self._last_read + self.config.timeout
        if self._loop.time() < due:
            self._timeout_handle = self._loop.call_at(due, self._check_timeout)
            return
        self.log.warning("[%s] timeout", self.name)
        self._shutdown()

    @_guarded
    def _on_kill_deadline(self):
        self._kill_handle = None
        if self._pid is None or self._kill_sent:
            return
        self.log.warning("[%s] shutdown time expired", self.name)
        self._send_kill()

    # -- exit ---------------------------------------------------------------

    def _close_pidfd(self):
        pidfd = self._pidfd
        if pidfd >= 0:
            self._pidfd = -1
            try:
                self._loop.remove_reader(pidfd)
            finally:
                os.close(pidfd)

    @_guarded
    def _on_pidfd(self):
        self._close_pidfd()             # stays readable: one notification only
        self._exit_seen()

    @_guarded
    def _on_exit_notify(self, session):
        if session == self._session:
            self._exit_seen()

    def _exit_seen(self):
        if self._pid is None or self._exited:
            return
        self._exited = True
        if self._rfd < 0:
            self._reap()
        elif self._kill_sent:
            self._abandon_pipe()
            self._reap()
        # else: wait for EOF (a background child may still write)

    def _reap(self):
        pid = self._pid
        if pid is None:
            return
        try:
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            wpid, status = pid, None             # reaped by somebody else
        if wpid == 0:                            # pragma: no cover - not exited after all
            self._exited = False
            self._watch_exit()
            return

        self._close_pidfd()
        for attr in ("_timeout_handle", "_kill_handle"):
            handle = getattr(self, attr)
            if handle is not None:
                handle.cancel()
                setattr(self, attr, None)
        if self._rfd >= 0:                       # pragma: no cover - reaped elsewhere
            self._close_pipe()

        self.exit_status = status
        self.returncode = None if status is None else os.waitstatus_to_exitcode(status)
        self.exit_description = describe_status(status)
        if self._proc is not None:
            self._proc.returncode = self.returncode if status is not None else 0
        plain = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        self.log.log(logging.INFO if plain else logging.WARNING,
                     "[%s] %s", self.name, self.exit_description)
        self._pid = None
        self._proc = None
        self._exited = False

        waiters, self._stop_waiters = self._stop_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        if self._stopping or not self._supervising:
            self._supervising = False
            self._restart_requested = False
        elif self._restart_requested:
            self._restart_requested = False
            self._retry_handle = self._loop.call_soon(self._spawn)
        else:
            self._schedule_retry()

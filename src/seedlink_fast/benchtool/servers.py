"""Servers the harness starts and stops itself (``--server-cmd``,
``--seiscomp-seedlink``, ``--ringserver``), and the configuration it writes
for them.

The generated seedlink.ini serves both our server and SeisComP's seedlink
(SeisComP ignores the ``raw_*`` keys with a warning).  Its stations:

========  =====================================================================
XX.LAT    latency records from the feeder plugin (or DataLink)
XX.ING    ingest records from the feeder plugin (or DataLink); also what the
          fan-out and handshake scenarios read (``--preload``)
XX.RAWL   raw ingest port, channel 1 (00.HHZ): latency probes
XX.RAWI   raw ingest port, channels 1..16 (00.C01..00.C16): raw ingest
========  =====================================================================

The feeder plugin (:mod:`.feeder`) reads its orders from ``feed.fifo`` in
the work directory.  ringserver gets a ring.conf with a SeedLink/DataLink
port and a DataLink port instead.

In a command, these placeholders are replaced: {ini} {ringconf} {port}
{raw_port} {datalink_port} {work} {fifo} {python}.
"""
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from . import procfs
from .feeder import plugin_line

STATIONS = {"latency": "XX.LAT", "ingest": "XX.ING", "raw_latency": "XX.RAWL",
            "raw_ingest": "XX.RAWI"}
RAW_INGEST_CHANNELS = 16
# what each kind of server can be fed by (custom commands: anything)
FEEDS = {"seedlink-fast": ("plugin", "raw"), "seiscomp": ("plugin",), "ringserver": ("datalink",)}
OURS_CMD = "{python} -m seedlink_fast serve -f {ini} --bind 127.0.0.1"

_INI = """\
[seedlink]
organization = "seedlink-fast bench"
network = XX
filebase = "{work}/buffer"
port = {port}
encoding = steim2
trusted = 127.0.0.0/8
access = 0.0.0.0/0
info = streams
info_trusted = all
window_extraction = enabled
window_extraction_trusted = enabled
request_log = disabled
stream_check = enabled
connections = 0
connections_per_ip = 0
buffers = 1000
segments = 50
segsize = 10000
raw_ingest_port = {raw_port}
raw_idle_flush = 0.2

{plugin}
station .dummy access = 0.0.0.0 description = "seedlink-fast bench"

station XX.LAT description = "bench: latency records"
             name = "LAT"
             network = "XX"
             segments = 10
             segsize = 1000

station XX.ING description = "bench: ingest records"
             name = "ING"
             network = "XX"

station XX.RAWL description = "bench: raw latency probes"
             name = "RAWL"
             network = "XX"
             segments = 10
             segsize = 1000
             raw_channels = "00.HHZ:1,"

station XX.RAWI description = "bench: raw ingest"
             name = "RAWI"
             network = "XX"
             raw_channels = "{raw_map}"
"""

_RING_CONF = """\
# ringserver configuration written by seedlink-fast bench
RingDirectory {work}/ring
RingSize 1G
MaxPacketSize 512
ListenPort {port}
DataLinkPort {datalink_port}
ServerID "seedlink-fast bench"
Verbosity 1
MaxClients 2000
MaxClientsPerIP 0
ResolveHostnames 0
ClientTimeout 3600
WriteIP 127.0.0.1/32
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_setup(work, port=None, raw_port=None, datalink_port=None, python=None):
    """Write seedlink.ini, ring.conf and the feeder's FIFO into `work`;
    returns the values of the placeholders."""
    os.makedirs(work, exist_ok=True)
    work = os.path.abspath(work)
    values = {"work": work, "port": port or free_port(), "raw_port": raw_port or free_port(),
              "datalink_port": datalink_port or free_port(), "python": python or sys.executable,
              "fifo": os.path.join(work, "feed.fifo"),
              "ini": os.path.join(work, "seedlink.ini"),
              "ringconf": os.path.join(work, "ring.conf")}
    if not os.path.exists(values["fifo"]):
        os.mkfifo(values["fifo"])
    raw_map = ",".join("00.C%02d:%d" % (k, k) for k in range(1, RAW_INGEST_CHANNELS + 1)) + ","
    with open(values["ini"], "w") as fh:
        fh.write(_INI.format(plugin=plugin_line(values["fifo"], values["python"]),
                             raw_map=raw_map, **values))
    os.makedirs(os.path.join(work, "ring"), exist_ok=True)
    with open(values["ringconf"], "w") as fh:
        fh.write(_RING_CONF.format(**values))
    return values


class ServerSpec:
    """What to start: kind ("seedlink-fast", "seiscomp", "ringserver" or
    "custom") and a command line with placeholders."""

    def __init__(self, kind, cmd, label=None):
        self.kind = kind
        self.cmd = cmd
        self.label = label or kind

    @property
    def generated(self):
        """The harness writes the configuration (the command uses it)."""
        return any("{%s}" % k in self.cmd for k in ("ini", "ringconf", "port"))

    def default_feed(self):
        return {"ringserver": "datalink"}.get(self.kind, "plugin")

    @classmethod
    def from_args(cls, server_cmds=(), seiscomp=None, ringserver=None):
        specs = []
        for cmd in server_cmds or ():
            cmd = OURS_CMD if cmd == "ours" else cmd
            kind = "seedlink-fast" if "seedlink_fast" in cmd or "seedlink-fast" in cmd else "custom"
            specs.append(cls(kind, cmd))
        if seiscomp:
            specs.append(cls("seiscomp", "%s -f {ini}" % shlex.quote(seiscomp)))
        if ringserver:
            specs.append(cls("ringserver", "%s {ringconf}" % shlex.quote(ringserver)))
        return specs


class ManagedServer:
    """A server the harness started; stop() ends it and everything it started."""

    def __init__(self, spec, work=None, addr=None, timeout=30.0):
        self.spec = spec
        self.temporary = work is None          # removed by stop()
        self.work = os.path.abspath(work or tempfile.mkdtemp(prefix="slf-bench-"))
        self.values = write_setup(self.work)
        argv = shlex.split(spec.cmd.format(**self.values))
        if spec.generated:
            self.addr = ("127.0.0.1", self.values["port"])
        elif addr is None:
            raise ValueError("%r writes no {ini}/{port}: give its --seedlink address" % spec.cmd)
        else:
            self.addr = addr
        self.log_path = os.path.join(self.work, "server.log")
        self._log = open(self.log_path, "ab")
        self.argv = argv
        # own session: stop() signals the whole group (server and plugins),
        # by the group id of the process started here, nothing else
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.work,
            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"), start_new_session=True,
            preexec_fn=lambda: procfs.raise_nofile(1 << 16))
        self.pid = self.proc.pid
        self.started = time.monotonic()
        try:
            self.listen_seconds = self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited (%s): %s" % (self.proc.returncode,
                                                               self.log_tail()))
            try:
                socket.create_connection(self.addr, timeout=0.5).close()
                return round(time.monotonic() - self.started, 3)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not listen on %s:%d within %.0f s: %s"
                           % (self.addr + (timeout, self.log_tail())))

    def feed(self, kind=None):
        """The feed spec for this server: 'plugin:FIFO', 'raw:HOST:PORT' or
        'datalink:HOST:PORT'."""
        kind = kind or self.spec.default_feed()
        offered = FEEDS.get(self.spec.kind)
        if offered and kind not in offered:
            raise ValueError("%s takes the feed(s) %s, not %s" % (self.spec.kind,
                                                                  "/".join(offered), kind))
        host = self.addr[0]
        if kind == "plugin":
            return "plugin:%s" % self.values["fifo"]
        if kind == "raw":
            return "raw:%s:%d" % (host, self.values["raw_port"])
        if kind == "datalink":
            return "datalink:%s:%d" % (host, self.values["datalink_port"])
        raise ValueError("unknown feed %r" % kind)

    def alive(self):
        return self.proc.poll() is None

    def hwm(self):
        return procfs.tree_hwm_kb(self.pid)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as fh:
                return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout=20.0):
        """SIGTERM to the server's process group, SIGKILL after `timeout`."""
        out = {"peak": self.hwm(), "cpu": procfs.tree_cpu_s(self.pid)}
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        out["returncode"] = self.proc.returncode
        if self.temporary:
            out["log_tail"] = self.log_tail(5)
            shutil.rmtree(self.work, ignore_errors=True)
        return out

"""Run a real ``seedlink-fast serve`` process on 127.0.0.1 for tests."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import io

import numpy as np

from conftest import SHARED, golden_case
from seedlink_fast.plugin import PluginWriter
from slclient import SLClient, stations_end_seq


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess with its port, log file and buffer directory."""

    def __init__(self, ini_path, port, workdir):
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seedlink_fast", "serve", "-f", str(ini_path),
             "--bind", "127.0.0.1", "-v"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=str(workdir),
            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        self.wait_listening()

    def wait_listening(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: %s" % self.log_path.read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not listen: %s" % self.log_path.read_text())

    def client(self, timeout=10.0):
        return SLClient(self.port, timeout=timeout)

    def wait_settled(self, stable=1.5, timeout=60.0):
        """Poll INFO STATIONS until every end_seq is unchanged for `stable` s."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            with self.client() as c:
                seqs = stations_end_seq(c.info("STATIONS")[0])
            if seqs != last:
                last, since = seqs, time.monotonic()
            elif time.monotonic() - since >= stable:
                return seqs
            time.sleep(0.2)
        raise AssertionError("stations never settled: %s" % last)

    def stop(self, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def golden_server_ini(case, tmp_path, port, plugin_cmd=None):
    case_dir = golden_case(case)
    if plugin_cmd is None:
        plugin_cmd = "cat %s >&63; exec sleep 3600 #" % (case_dir / "input.plugin")
    text = (case_dir / "seedlink.ini").read_text()
    text = (text.replace("@FILTERS@", str(SHARED / "reference" / "seiscomp-filters.fir"))
                .replace("@STREAMS@", str(case_dir / "streams.xml"))
                .replace("@FILEBASE@", str(tmp_path / "buffer"))
                .replace("@PORT@", str(port)).replace("@PLUGIN@", plugin_cmd))
    path = tmp_path / "seedlink.ini"
    path.write_text(text)
    return path


# -- a small live station: XX.TEST fed by a plugin with 10 minutes of 100 Hz ZNE --

MINUTES = 10
T0 = (2026, 325, 23, 50, 0, 0)


def make_station_input(path):
    """MINUTES of 100 Hz Z/N/E for XX.TEST, a time packet a minute, a LOG."""
    out = io.BytesIO()
    w = PluginWriter(out)
    rng = np.random.default_rng(7)
    w.send_log3("XX.TEST", T0, "plugin started")
    data = {c: np.cumsum(rng.normal(0, 50, MINUTES * 6000)).astype(np.int32) for c in "ZNE"}
    for second in range(MINUTES * 60):
        for comp in "ZNE":
            timed = second % 60 == 0
            sec = T0[4] + second
            pt = (T0[0], T0[1], T0[2], T0[3] + sec // 60, sec % 60, 0) if timed else None
            w.send_raw3("XX.TEST", comp, pt, 0, 100, data[comp][second * 100:(second + 1) * 100])
    path.write_bytes(out.getvalue())
    return data


def make_station_ini(tmp_path, port, extra=""):
    plugin_input = tmp_path / "input.plugin"
    make_station_input(plugin_input)
    streams = tmp_path / "streams.xml"
    streams.write_text("<streams>%s</streams>"
                       % (SHARED / "reference" / "seiscomp-streams_stream100.tpl").read_text())
    ini = tmp_path / "seedlink.ini"
    ini.write_text("""[seedlink]
organization = "Test Org"
network = XX
filebase = "%(filebase)s"
port = %(port)d
encoding = steim2
trusted = 127.0.0.0/8
info = streams
info_trusted = all
window_extraction = enabled
window_extraction_trusted = enabled
stream_check = enabled
gap_check_pattern = "."
segments = 5
segsize = 100
seq_gap_limit = 100000
proc_gap_warn = 10
proc_gap_flush = 100000
proc_gap_reset = 1000000
filters = "%(filters)s"
streams = "%(streams)s"
%(extra)s
plugin test cmd = "cat %(input)s >&63; exec sleep 3600 #"
             start_retry = 0
             shutdown_wait = 5

station .dummy access = 0.0.0.0 description = "Test Org"

station XX.TEST description = "Test station"
             name = "TEST"
             network = "XX"
             proc = "stream100"
""" % dict(filebase=tmp_path / "buffer", port=port, streams=streams, input=plugin_input,
           filters=SHARED / "reference" / "seiscomp-filters.fir", extra=extra))
    return ini

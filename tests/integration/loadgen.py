"""Load generation and raw-socket helpers for the server reliability tests.

Two halves:

* a **plugin program** (``python loadgen.py plugin ...``, run by the server
  through its ``plugin ... cmd=`` line) that writes 512-byte miniSEED records
  to fd 63 at a steady rate, every record tagged with its run and index so a
  test can tell which plugin run produced the bytes stored under a sequence
  number;
* client-side helpers used by the tests: ini builder, raw SeedLink sockets
  (optionally from another loopback source address, with a small receive
  buffer), packet readers with deadlines, a threaded streaming reader,
  ``VmRSS`` of a process.

Every loop here is bounded in count and in time.
"""
import argparse
import os
import re
import socket
import struct
import sys
import threading
import time

PACKET = 520                      # "SL" + 6 hex digits + 512-byte record
RECORD = 512
TAG_OFFSET = 472                  # where the run/index tag lives in a record
_TAG = re.compile(rb"RUN([0-9a-f]{16})IDX(\d{10})")
T0_NS = 1_790_000_000 * 10**9     # 2026-09-21, any fixed time will do

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# records

def _btime(ns):
    """SEED BTIME fields (year, doy, hour, minute, second, 0.1 ms) of epoch ns."""
    import datetime

    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=ns // 1000)
    return (t.year, t.timetuple().tm_yday, t.hour, t.minute, t.second,
            t.microsecond // 100)


_FSDH = struct.Struct(">6scc5s2s3s2sHHBBBBHHhhBBBBiHH")
_B1000 = struct.Struct(">HHBBBB")


def make_record(network, station, run, index, channel="HHZ", rate=100, nsamp=10):
    """A valid 512-byte miniSEED 2 record (INT32 encoding, blockette 1000),
    unique per (run, index), written here from the SEED layout (independent
    of the server's encoder).

    The samples occupy bytes 64..; the tag ``RUN<16 hex>IDX<10 digits>`` sits
    in the unused tail of the data area (readers stop after num_samples)."""
    year, doy, hh, mm, ss, frac = _btime(T0_NS + index * (nsamp * 10**9 // rate))
    head = _FSDH.pack(b"%06d" % (index % 1000000), b"D", b" ", station.encode().ljust(5),
                      b"  ", channel.encode().ljust(3), network.encode().ljust(2),
                      year, doy, hh, mm, ss, 0, frac, nsamp, rate, 1, 0, 0, 0, 1, 0, 64, 48)
    blk = _B1000.pack(1000, 0, 3, 1, 9, 0)
    data = struct.pack(">%di" % nsamp, *((index + k) % 1000 for k in range(nsamp)))
    rec = bytearray(RECORD)
    rec[0:48] = head
    rec[48:56] = blk
    rec[64:64 + len(data)] = data
    tag = b"RUN%016xIDX%010d" % (run, index)
    rec[TAG_OFFSET:TAG_OFFSET + len(tag)] = tag
    return bytes(rec)


def poison_record(record):
    """The record with blockette 1000's next-blockette offset set to 510: a
    blockette 'starting' 2 bytes before the end of the record.  Odd but
    harmless for a server that stores records verbatim (SeisComP does)."""
    rec = bytearray(record)
    rec[50:52] = struct.pack(">H", 510)
    return bytes(rec)


def record_tag(record):
    """(run, index) of a record made by make_record, or None."""
    m = _TAG.search(record, TAG_OFFSET - 8)
    if m is None:
        return None
    return int(m.group(1), 16), int(m.group(2))


# ---------------------------------------------------------------------------
# the plugin program

def plugin_main(argv):
    from seedlink_fast.plugin_stream import MSEED, encode_header

    p = argparse.ArgumentParser(prog="loadgen plugin")
    p.add_argument("--station", required=True, help="plugin station key, e.g. XX.LOAD")
    p.add_argument("--net", default="XX")
    p.add_argument("--sta", default="LOAD")
    p.add_argument("--count", type=int, default=1000, help="records to write, then idle")
    p.add_argument("--rate", type=float, default=0.0, help="records/s, 0 = as fast as possible")
    p.add_argument("--wait-file", default=None, help="start writing when this file exists")
    p.add_argument("--pid-file", default=None, help="append '<pid> <run>' here at start")
    p.add_argument("--done-file", default=None, help="write time.time() here when all sent")
    p.add_argument("--idle", type=float, default=600.0, help="seconds to idle afterwards")
    p.add_argument("--poison-at", type=int, default=-1,
                   help="make record I odd (see poison_record), in the first run only")
    p.add_argument("name", nargs="?", help="plugin name (appended by the server)")
    args = p.parse_args(argv)

    run = (os.getpid() << 40 | time.time_ns() & ((1 << 40) - 1)) & ((1 << 64) - 1)
    poison = args.poison_at
    if poison >= 0 and args.pid_file and plugin_runs(args.pid_file):
        poison = -1                               # not the first run
    if args.pid_file:
        with open(args.pid_file, "a") as fh:
            fh.write("%d %016x\n" % (os.getpid(), run))
    if args.wait_file:
        deadline = time.monotonic() + 120
        while not os.path.exists(args.wait_file):
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.01)
    head = encode_header(MSEED, args.station, "", None, 0, 0, RECORD)

    def record(i):
        rec = make_record(args.net, args.sta, run, i)
        return poison_record(rec) if i == poison else rec

    def packets(first, n):
        return b"".join(head + record(i) for i in range(first, first + n))

    sent = 0
    start = time.monotonic()
    try:
        while sent < args.count:
            if args.rate > 0:
                due = min(args.count, int((time.monotonic() - start) * args.rate) + 1)
                n = due - sent
                if n <= 0:
                    time.sleep(min(0.01, 1.0 / args.rate))
                    continue
            else:
                n = min(100, args.count - sent)      # 57 kB per write
            data = packets(sent, n)
            view = memoryview(data)
            while view:
                view = view[os.write(63, view):]
            sent += n
        if args.done_file:
            with open(args.done_file + ".tmp", "w") as fh:
                fh.write(repr(time.time()))
            os.replace(args.done_file + ".tmp", args.done_file)
        time.sleep(args.idle)
    except (BrokenPipeError, OSError):
        return 1
    return 0


# ---------------------------------------------------------------------------
# configuration

def plugin_cmd(station_key, sta, *, count, rate=0.0, wait_file=None, pid_file=None,
               done_file=None, poison_at=-1, net="XX"):
    """The ``cmd`` of a loadgen plugin line (``exec`` so the pid is Python's)."""
    parts = ["exec", sys.executable, os.path.join(HERE, "loadgen.py"), "plugin",
             "--station", station_key, "--net", net, "--sta", sta,
             "--count", str(count), "--rate", repr(float(rate))]
    if wait_file:
        parts += ["--wait-file", str(wait_file)]
    if pid_file:
        parts += ["--pid-file", str(pid_file)]
    if done_file:
        parts += ["--done-file", str(done_file)]
    if poison_at >= 0:
        parts += ["--poison-at", str(poison_at)]
    return " ".join(parts)


def make_ini(tmp_path, port, *, plugins=(), stations=(), extra="", segsize=100, segments=50,
             buffers=100, name="seedlink.ini"):
    """A seedlink.ini with a .dummy first station.

    plugins: (name, cmd, options) with options a string such as
    ``start_retry = 1``; stations: (key, options).  ``extra`` goes into the
    global part."""
    lines = ["[seedlink]",
             'organization = "Reliability Org"',
             "network = XX",
             'filebase = "%s"' % (tmp_path / "buffer"),
             "port = %d" % port,
             "encoding = steim2",
             "stream_check = enabled",
             "segments = %d" % segments,
             "segsize = %d" % segsize,
             "buffers = %d" % buffers,
             "seq_gap_limit = 16777216"]
    # defaults that `extra` may override (a second assignment would be ignored)
    for key, value in (("info", "all"), ("info_trusted", "all"),
                       ("window_extraction", "enabled"),
                       ("window_extraction_trusted", "enabled")):
        if not re.search(r"(?im)^\s*%s\s*=" % key, extra):
            lines.append("%s = %s" % (key, value))
    lines += [extra, ""]
    for pname, cmd, opts in plugins:
        lines.append('plugin %s cmd = "%s" %s' % (pname, cmd.replace('"', '\\"'), opts))
    lines.append('station .dummy access = 0.0.0.0 description = "Reliability Org"')
    for key, opts in stations:
        net, sta = key.split(".")
        # one quoted value per line: SeisComP's lexer merges two on one line
        lines += ["station %s %s" % (key, opts), '    name = "%s"' % sta,
                  '    network = "%s"' % net, '    description = "Station %s"' % sta]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------
# client side

def connect(port, *, source=None, rcvbuf=None, timeout=5.0):
    """A TCP connection to the server on 127.0.0.1, optionally from another
    loopback address and with SO_RCVBUF set before the handshake."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s


def recv_until(sock, predicate, buf=b"", timeout=5.0, limit=1 << 26):
    """Receive until predicate(buf) is true; returns (bytes, eof).  Bounded by
    time and size; EOF/reset end the wait (eof=True)."""
    data = bytearray(buf)
    deadline = time.monotonic() + timeout
    eof = False
    while not predicate(data) and len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 18)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            eof = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
    return bytes(data), eof


def recv_quiet(sock, quiet=0.2, timeout=5.0, limit=1 << 26):
    """Everything received until nothing came for `quiet` s (or EOF, or the
    overall timeout).  Returns (data, eof)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < limit:
        left = min(quiet, deadline - time.monotonic())
        if left <= 0:
            return bytes(out), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            return bytes(out), False
        except (ConnectionResetError, BrokenPipeError):
            return bytes(out), True
        if not chunk:
            return bytes(out), True
        out += chunk
    return bytes(out), False


def command(sock, line, timeout=5.0):
    """Send one command line, return the reply line (without CRLF)."""
    sock.sendall(line.encode("latin-1") + b"\r\n")
    buf, eof = recv_until(sock, lambda b: b"\r\n" in b, timeout=timeout)
    if b"\r\n" not in buf:
        raise AssertionError("no reply to %r (eof=%s, got %r)" % (line, eof, buf[:80]))
    reply, rest = buf.split(b"\r\n", 1)
    assert not rest, "unexpected bytes after the reply to %r: %r" % (line, rest[:80])
    return reply.decode("latin-1")


def info(sock, level, timeout=10.0):
    """(xml, channel) of INFO level on a connection that is otherwise quiet."""
    sock.sendall(b"INFO " + level.encode() + b"\r\n")
    buf = b""
    xml = b""
    channel = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf, eof = recv_until(sock, lambda b: len(b) >= PACKET, buf,
                              timeout=max(0.01, deadline - time.monotonic()))
        if len(buf) < PACKET:
            raise AssertionError("INFO %s: short answer (eof=%s) %r" % (level, eof, buf[:40]))
        packet, buf = buf[:PACKET], buf[PACKET:]
        assert packet[:6] == b"SLINFO", packet[:8]
        rec = packet[8:]
        channel = rec[15:18].decode()
        n = int.from_bytes(rec[30:32], "big")
        xml += rec[64:64 + n]
        if packet[6:8] != b" *":
            assert not buf, "bytes after the last SLINFO packet"
            return xml.decode(), channel
    raise AssertionError("INFO %s: no final SLINFO packet" % level)


def split_packets(data):
    """[(seq, record)] of a run of SL data packets (data must be whole packets)."""
    assert len(data) % PACKET == 0, len(data)
    out = []
    for i in range(0, len(data), PACKET):
        pk = data[i:i + PACKET]
        assert pk[:2] == b"SL" and pk[2:8] != b"INFO *" and pk[2:8] != b"INFO  ", pk[:8]
        out.append((int(pk[2:8], 16), pk[8:]))
    return out


def fetch_all(port, sta, net, first_seq, timeout=30.0, source=None):
    """[(seq, record)] of FETCH <first_seq> (dial-up, until END)."""
    s = connect(port, source=source, timeout=timeout)
    try:
        assert command(s, "STATION %s %s" % (sta, net)) == "OK"
        assert command(s, "FETCH %06X" % first_seq) == "OK"
        s.sendall(b"END\r\n")
        buf, eof = recv_until(s, lambda b: len(b) % PACKET == 3 and b.endswith(b"END"),
                              timeout=timeout, limit=1 << 30)
        if not (len(buf) % PACKET == 3 and buf.endswith(b"END")):
            raise AssertionError("FETCH %06X: no END after %d bytes (eof=%s)"
                                 % (first_seq, len(buf), eof))
        return split_packets(buf[:-3])
    finally:
        s.close()


class StreamReader(threading.Thread):
    """A realtime (DATA) client in a thread that keeps every (seq, record).

    Stops on EOF/reset, on stop(), or after max_seconds."""

    def __init__(self, port, sta, net, start="000000", max_seconds=60.0, source=None,
                 rcvbuf=None):
        super().__init__(daemon=True)
        self.sock = connect(port, source=source, rcvbuf=rcvbuf)
        assert command(self.sock, "STATION %s %s" % (sta, net)) == "OK"
        assert command(self.sock, ("DATA %s" % start).strip()) == "OK"
        self.sock.sendall(b"END\r\n")
        self.packets = []                 # (seq, record, time.time() of arrival)
        self.lock = threading.Lock()
        self.max_seconds = max_seconds
        self.eof = False
        self.error = None
        self._stop_event = threading.Event()
        self.start()

    def run(self):
        buf = b""
        deadline = time.monotonic() + self.max_seconds
        try:
            while not self._stop_event.is_set() and time.monotonic() < deadline:
                self.sock.settimeout(0.2)
                try:
                    chunk = self.sock.recv(1 << 18)
                except socket.timeout:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    self.eof = True
                    break
                except OSError:            # closed by stop()
                    break
                if not chunk:
                    self.eof = True
                    break
                buf += chunk
                n = len(buf) - len(buf) % PACKET
                if n:
                    now = time.time()
                    got = [(seq, rec, now) for seq, rec in split_packets(buf[:n])]
                    buf = buf[n:]
                    with self.lock:
                        self.packets.extend(got)
        except Exception as exc:          # reported by the test
            self.error = exc
        self.tail = buf

    def count(self):
        with self.lock:
            return len(self.packets)

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.01)
        return self.count()

    def snapshot(self):
        with self.lock:
            return [(s, r) for s, r, _ in self.packets]

    def stop(self):
        self._stop_event.set()
        self.join(5)
        try:
            self.sock.close()
        except OSError:
            pass


def vmrss_kb(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def segment_records(station_dir):
    """{position: record} of every complete record in a station's segment files."""
    seg_dir = os.path.join(station_dir, "segments")
    out = {}
    end = None
    for name in sorted(os.listdir(seg_dir), key=lambda n: int(n, 16)):
        with open(os.path.join(seg_dir, name), "rb") as fh:
            data = fh.read()
        first = int(name, 16)
        if end is not None and first < end:
            raise AssertionError("segment files overlap: %s starts at %d, the previous one "
                                 "ends at %d" % (name, first, end))
        end = first + len(data) // RECORD
        for i in range(len(data) // RECORD):
            out[first + i] = data[i * RECORD:(i + 1) * RECORD]
    return out


def set_linger_rst(sock):
    """close() will then send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def plugin_runs(pid_file):
    """[(pid, run)] of every start of a loadgen plugin, oldest first."""
    try:
        with open(pid_file) as fh:
            return [(int(a), int(b, 16)) for a, b in (line.split() for line in fh if line.strip())]
    except FileNotFoundError:
        return []


def is_loadgen(pid):
    """True while pid is a live (not zombie) loadgen plugin process."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            cmdline = fh.read()
        with open("/proc/%d/stat" % pid) as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return b"loadgen.py" in cmdline and state not in ("Z", "X")


def wait_until(predicate, timeout, interval=0.02):
    """Poll predicate until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def kill_strays(pid_file):
    """SIGKILL loadgen plugins of this test still alive (cleanup only)."""
    import signal

    for pid, _ in plugin_runs(pid_file):
        if is_loadgen(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def end_seq(port, sta, net="XX", source=None):
    """end_seq of a station from INFO STATIONS (None if not listed)."""
    s = connect(port, source=source)
    try:
        xml, channel = info(s, "STATIONS")
    finally:
        s.close()
    m = re.search(r'<station name="%s" network="%s"[^>]*end_seq="([0-9A-F]+)"' % (sta, net), xml)
    return int(m.group(1), 16) if m else None


def wait_end_seq(port, sta, at_least, timeout, net="XX"):
    """Poll INFO STATIONS until end_seq >= at_least; returns the last end_seq."""
    deadline = time.monotonic() + timeout
    while True:
        seq = end_seq(port, sta, net)
        if (seq is not None and seq >= at_least) or time.monotonic() >= deadline:
            return seq
        time.sleep(0.05)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "plugin":
        sys.exit(plugin_main(sys.argv[2:]))
    sys.exit("usage: loadgen.py plugin --station KEY ...")

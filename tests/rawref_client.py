"""A reference raw plugin for tests: connects to a RAW device, negotiates and
collects packets, then packs them into miniSEED with pymseed the way the
original C++ raw_plugin does (one flushed 512-byte record set per packet).

Written from the byte layout in raw-protocol.md (§1.3, §1.4) alone, with
struct, so that it checks seedlink_fast.raw rather than agreeing with it.
:class:`Wire` (lines and packets on any socket) also serves the tests' push
peer.
"""
import calendar
import socket
import struct
import time

import numpy as np

HEADERS = {
    # year, yday, hour, minute, second, usec, [quality,] channel id, count
    "RAW 1.0": struct.Struct(">HHBBBIII"),
    "RAW 1.1": struct.Struct(">HHBBBIII"),
    "RAW 2.0": struct.Struct(">HHBBBIBHI"),
}
TYPES = {"int8": "i1", "int16": "i2", "int32": "i4", "float32": "f4", "float64": "f8"}


class Closed(EOFError):
    """The peer closed the connection."""


class Wire:
    """Reads LF lines and RAW packets from a connected socket.  `channels`
    maps id -> (rate, endianness, type) of the negotiated channels."""

    def __init__(self, sock, version, channels=None):
        self.sock = sock
        self.header = HEADERS["RAW 2.0" if version.startswith("RAW 2.") else version]
        self.channels = {} if channels is None else channels
        self.buf = bytearray()

    def send_line(self, text):
        self.sock.sendall(text.encode("ascii") + b"\n")

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise Closed("peer closed the connection")
        self.buf += data

    def read_line(self):
        while b"\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\n")
        line = bytes(self.buf[:end])
        del self.buf[:end + 1]
        return line.decode("ascii")

    def read_packets(self, count, timeout=5.0):
        """`count` packets as (id, time_us, quality, samples), samples in the
        negotiated numpy dtype."""
        deadline = time.monotonic() + timeout
        packets = []
        size = self.header.size
        while len(packets) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("got %d of %d packets" % (len(packets), count))
            if len(self.buf) < size:
                self._fill()
                continue
            fields = self.header.unpack_from(self.buf)
            if size == 18:
                year, yday, hour, minute, second, usec, quality, cid, n = fields
            else:
                year, yday, hour, minute, second, usec, cid, n = fields
                quality = 100
            rate, endianness, samptype = self.channels[cid]    # KeyError: not asked for
            dtype = np.dtype((">" if endianness == "big" else "<") + TYPES[samptype])
            end = size + n * dtype.itemsize
            if len(self.buf) < end:
                self._fill()
                continue
            samples = np.frombuffer(bytes(self.buf[size:end]), dtype=dtype)
            del self.buf[:end]
            day0 = calendar.timegm((year, 1, 1, 0, 0, 0)) + (yday - 1) * 86400
            us = (day0 + hour * 3600 + minute * 60 + second) * 1_000_000 + usec
            packets.append((cid, us, quality, samples))
        return packets


class RefClient(Wire):
    """``RefClient(port, "RAW 2.0", [1, 2])``: a plugin connection,
    negotiated on construction (version, CHANNEL per id, START)."""

    def __init__(self, port, version, ids, host="127.0.0.1", timeout=5.0):
        sock = socket.create_connection((host, port), timeout=timeout)
        # line by line, as the plugin writes: without this each line waits
        # for the previous one's delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, version)
        self.version = version
        self.send_line(version)
        answer = self.read_line()
        if answer != version:
            raise ValueError("device answered %r to %r" % (answer, version))
        for cid in ids:
            self.send_line("CHANNEL")
            self.send_line(str(cid))
            lines = [self.read_line() for _ in range(6)]
            assert lines[0::2] == ["SAMPLING RATE", "SAMPLE ENDIANNESS", "SAMPLE TYPE"], lines
            assert lines[1].isdigit(), lines
            self.channels[cid] = (int(lines[1]), lines[3], lines[5])
        self.send_line("START")
        answer = self.read_line()
        if answer != "STARTING":
            raise ValueError("device answered %r to START" % answer)

    def close(self):
        self.sock.close()


def to_mseed(packets, channels, network="XX", station="TEST", location="00",
             codes=None, encoding="STEIM2"):
    """miniSEED 2 bytes for the packets, as the plugin makes them: each packet
    flushed into its own 512-byte records, timing quality in blockette 1001.
    `codes` maps channel id -> SEED channel code (default HH + id letter)."""
    import pymseed

    out = []
    for cid, us, quality, samples in packets:
        rate, _, samptype = channels[cid]
        msr = pymseed.MS3Record(reclen=512)
        code = (codes or {}).get(cid, "HH" + chr(ord("A") + cid % 26))
        msr.sourceid = pymseed.nslc2sourceid(network, station, location, code)
        msr.formatversion = 2
        msr.samprate = rate
        msr.starttime = us * 1000
        msr.set_extra_header("/FDSN/Time/Quality", quality)
        if samptype == "float32":
            msr.encoding = pymseed.DataEncoding.FLOAT32
            data, kind = samples.astype(np.float32), "f"
        elif samptype == "float64":
            msr.encoding = pymseed.DataEncoding.FLOAT64
            data, kind = samples.astype(np.float64), "d"
        else:
            msr.encoding = getattr(pymseed.DataEncoding, encoding)
            data, kind = samples.astype(np.int32), "i"
        out.extend(msr.generate(data, kind))
    return b"".join(out)


def decode_mseed(data):
    """[(sourceid, start_ns, samples, quality)] of miniSEED bytes."""
    import pymseed

    return [(msr.sourceid, msr.starttime, np.array(msr.np_datasamples, copy=True),
             msr.get_extra_header("/FDSN/Time/Quality"))
            for msr in pymseed.MS3Record.from_buffer(data, unpack_data=True)]

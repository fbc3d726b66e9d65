"""A DataLink writer, to feed ringserver (the DataLink protocol 1.0/1.1 of
libdali's DataLink.protocol).

Every exchange is one DataLink packet::

    "DL" | header length (1 byte, unsigned) | header (ASCII, <= 255 bytes) | [data]

The writer sends ``ID <clientid>`` (the reply ``ID DataLink <version> ::
<capabilities>`` must list WRITE for us to be allowed to write), then one
``WRITE <streamid> <hpdatastart> <hpdataend> <flags> <size>`` packet per
record, the record as data.  hp times are epoch microseconds; flags ``N``
(no reply) or ``A`` (the server answers ``OK <packet id> <size>`` or
``ERROR <value> <size>``, a message of `size` bytes following).  Writes on
one connection are handled in order, so one acknowledged write after many
unacknowledged ones says that all of them were taken.

Stream ids: ``NET_STA_LOC_CHA/MSEED`` for DLPROTO 1.0, the FDSN source id
``FDSN:NET_STA_LOC_B_S_SS/MSEED`` for 1.1 (ringserver 4).

Only tested against the in-test acceptor of tests/integration/
test_bench_cli.py, not against a real ringserver (none is installed here).
"""
import getpass
import os
import platform
import socket

MAX_HEADER = 255


class DataLinkError(RuntimeError):
    pass


def frame(header, data=b""):
    """One DataLink packet: preheader, header, data."""
    if isinstance(header, str):
        header = header.encode("ascii")
    if len(header) > MAX_HEADER:
        raise ValueError("DataLink header longer than %d bytes: %r" % (MAX_HEADER, header[:40]))
    return b"DL" + bytes([len(header)]) + header + data


def write_header(stream_id, start_us, end_us, size, ack=False):
    return "WRITE %s %d %d %s %d" % (stream_id, start_us, end_us, "A" if ack else "N", size)


def stream_id(net, sta, loc, cha, proto="1.0"):
    """The DataLink stream id of a miniSEED stream for protocol `proto`."""
    if proto >= "1.1":
        if len(cha) == 3:
            cha = "_".join(cha)            # band, source, subsource
        return "FDSN:%s_%s_%s_%s/MSEED" % (net, sta, loc, cha)
    return "%s_%s_%s_%s/MSEED" % (net, sta, loc, cha)


class DataLinkWriter:
    """A connection that writes records to a DataLink server."""

    def __init__(self, addr, client_id=None, timeout=10.0):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        try:
            client_id = client_id or "seedlink-fast-bench:%s:%d:%s" % (
                getpass.getuser(), os.getpid(), platform.machine())
            self.sock.sendall(frame("ID " + client_id))
            header, _ = self.read_packet()
            if not header.startswith("ID "):
                raise DataLinkError("ID: server said %r" % header)
        except BaseException:
            self.sock.close()
            raise
        self.server_id = header[3:]
        caps = header.partition("::")[2].split()
        self.proto = next((c.split(":", 1)[1] for c in caps if c.startswith("DLPROTO:")), "1.0")
        self.can_write = "WRITE" in caps

    def _recv_exact(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise DataLinkError("the DataLink server closed the connection")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_packet(self):
        """(header text, data bytes) of the next packet from the server."""
        pre = self._recv_exact(3)
        if pre[:2] != b"DL":
            raise DataLinkError("not a DataLink packet: %r" % pre)
        header = self._recv_exact(pre[2]).decode("ascii", "replace")
        words = header.split()
        size = 0
        if words and words[0] in ("OK", "ERROR", "INFO", "PACKET") and words[-1].isdigit():
            size = int(words[-1])
        return header, self._recv_exact(size) if size else b""

    def write(self, sid, start_us, end_us, record, ack=False):
        """Write one record; with `ack`, wait for the reply and return the
        packet id (DataLinkError on ERROR)."""
        self.sock.sendall(frame(write_header(sid, start_us, end_us, len(record), ack), record))
        return self.reply() if ack else None

    def send_raw(self, data):
        """Send prepared packets (from :func:`frame`) as they are."""
        self.sock.sendall(data)

    def reply(self):
        """Wait for an OK/ERROR reply; return its value (the packet id)."""
        header, data = self.read_packet()
        words = header.split()
        if words[:1] == ["OK"] and len(words) >= 2:
            return int(words[1])
        raise DataLinkError("WRITE: server said %r %r" % (header, data[:80]))

    def close(self):
        self.sock.close()

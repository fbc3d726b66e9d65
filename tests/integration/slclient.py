"""A minimal blocking SeedLink 3 client for tests, written from the protocol
notes (independent of the server code).  Every read is bounded in time."""
import re
import socket
import time


class SLClient:
    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def read_line(self):
        deadline = time.monotonic() + self.timeout
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def command(self, line):
        self.send(line)
        return self.read_line()

    def read_exact(self, n):
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_packets_until_end(self, limit=10_000_000):
        """SL packets until the 3-byte END; returns the raw bytes (without END)."""
        out = []
        deadline = time.monotonic() + self.timeout
        while len(out) < limit:
            while len(self.buf) < 3:
                self._fill(deadline)
            if self.buf[:3] == b"END" and (len(self.buf) == 3 or self.buf[3:5] != b"SL"):
                self.buf = self.buf[3:]
                return b"".join(out)
            out.append(self.read_exact(520))
        raise AssertionError("no END after %d packets" % limit)

    def info(self, level):
        """The XML of INFO level, reassembled from the SLINFO records."""
        self.send("INFO " + level)
        xml = b""
        channel = None
        while True:
            packet = self.read_exact(520)
            assert packet[:6] == b"SLINFO", packet[:8]
            record = packet[8:]
            channel = record[15:18]
            nsamples = int.from_bytes(record[30:32], "big")
            xml += record[64:64 + nsamples]
            if packet[6:8] != b" *":
                return xml.decode(), channel.decode()


def stations_end_seq(xml):
    """{(net, sta): end_seq} from INFO STATIONS XML."""
    out = {}
    for m in re.finditer(r'<station name="([^"]*)" network="([^"]*)"[^>]*end_seq="([0-9A-F]+)"',
                         xml):
        out[(m.group(2), m.group(1))] = int(m.group(3), 16)
    return out

"""The RFC 6455 subset SeisComP's seedlink speaks (docs §2.13).

A client whose class allows WebSocket may open its connection with
``GET …``; the header lines that follow are tokenised like commands, and
``Sec-WebSocket-Key`` / ``Sec-WebSocket-Protocol`` are kept.  After the 101
reply every client frame (FIN and MASK set, payload under 126 bytes) carries
one command; every server message goes out as one binary frame: a data or
SLINFO packet, a reply line, ``END`` or a CAT chunk.
"""
import base64
import hashlib
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 1, 2, 8, 9, 10


class WebSocketError(Exception):
    """The client broke the protocol: the connection is closed."""


class Handshake:
    """Collects the header lines after ``GET``."""

    def __init__(self):
        self.key = None
        self.protocol = None

    def line(self, tokens):
        """Feed one tokenised header line; returns True at the empty line."""
        if not tokens:
            if self.key is None:
                raise WebSocketError("no Sec-WebSocket-Key")
            return True
        name = tokens[0].lower()
        if name in ("sec-websocket-key", "sec-websocket-protocol"):
            if len(tokens) != 2:
                raise WebSocketError("%s needs exactly one value" % tokens[0])
            if name == "sec-websocket-key":
                self.key = tokens[1]
            else:
                self.protocol = tokens[1]
        return False

    def reply(self):
        accept = base64.b64encode(hashlib.sha1(self.key.encode("latin-1") + GUID).digest())
        return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Protocol: %s\r\n"
                b"Sec-WebSocket-Accept: %s\r\n\r\n"
                % ((self.protocol or "").encode("latin-1"), accept))


def frame(payload, opcode=OP_BINARY):
    """One unmasked server frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + bytes(payload)


def parse_frames(buf):
    """Complete client frames at the start of buf (a bytearray, consumed):
    list of (opcode, payload).  Raises WebSocketError for frames SeisComP
    rejects: no FIN, no MASK, or a payload of 126 bytes or more."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        if not b0 & 0x80 or not b1 & 0x80:
            raise WebSocketError("frames must have FIN and MASK set")
        n = b1 & 0x7F
        if n >= 126:
            raise WebSocketError("frame payload too long")
        if len(buf) < 6 + n:
            break
        mask = buf[2:6]
        payload = bytes(buf[6 + i] ^ mask[i % 4] for i in range(n))
        del buf[:6 + n]
        out.append((b0 & 0x0F, payload))
    return out

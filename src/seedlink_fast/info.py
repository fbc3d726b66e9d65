"""SeedLink 3 INFO documents, INFO packets, CAT and HELLO replies, byte for
byte as SeisComP's seedlink (v3.3 2024.020, libxml2 2.9) produces them.

INFO
----
The document is built for a level (``ID`` < ``CAPABILITIES`` < ``STATIONS``
< ``STREAMS`` < ``GAPS`` < ``CONNECTIONS`` < ``ALL``, case-insensitive
names) and serialised the way libxml2's ``xmlSaveFileTo`` does without an
encoding: ``<?xml version="1.0"?>`` LF, the root element on one line without
any indentation, LF.  Elements without children are written ``<x .../>``.
Attribute values are escaped as libxml2 2.9 does (see ``escape_attr``).

Content by level (``L`` the requested level):

* root ``seedlink``: ``software``, ``organization``, ``started``;
* ``capability name=...`` children when L is CAPABILITIES or ALL;
* L >= STATIONS: one ``station`` per station the client may access
  (registration order): ``name network description begin_seq end_seq
  stream_check``;
* STREAMS <= L <= GAPS or L == ALL, and the station's stream_check on:
  ``stream location seedname type begin_time end_time begin_recno end_recno
  gap_check gap_treshold`` sorted by (location, seedname) compared like
  ``strcasecmp`` and then type in ``DECTLO`` order;
* L >= GAPS (so GAPS and ALL): ``gap begin_time end_time`` inside each
  stream, in the order given;
* L >= CONNECTIONS: ``connection host port ctime begin_seq current_seq
  sequence_gaps txcount begin_seq_valid realtime end_of_data`` in each
  station, with an optional ``window begin_time end_time`` child and one
  ``selector pattern`` child per selector.

A level above the client's permission, or an unknown name, gets the bare
root element in ``ERR`` records (``info_refused``).

Times are ``%d/%02d/%02d %02d:%02d:%02d.%04d`` with the sub-second part
truncated to 0.1 ms.  Sequence numbers are 6 upper-case hex digits, record
numbers 6 decimal digits.

Packets: the XML is cut into 448-byte pieces, each in a 512-byte ASCII
record (sequence ``000000``... restarting per request, quality ``D``,
blank station/location/network, channel ``INF``/``ERR``, start time = the
moment of the request rounded to 0.1 ms, rate 0/0, num_samples = piece
length, blockette 1000 only, data at 64, zero padding), each preceded by
``SLINFO *`` (more follow) or ``SLINFO  `` (the last one).
"""

import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Tuple, Union

from ._ext import mseed as _mseed

__all__ = [
    "SOFTWARE", "INFO_LEVELS", "ID", "CAPABILITIES", "STATIONS", "STREAMS",
    "GAPS", "CONNECTIONS", "ALL", "UNKNOWN_LEVEL", "INFO_DATA_LEN",
    "CAPABILITIES_31", "capabilities_31", "hello_response",
    "ServerInfo", "InfoStream", "InfoConnection", "InfoStation",
    "CapabilityConfig", "ClientInfo", "InfoContext",
    "info_level", "info_refused", "format_time", "escape_attr",
    "capability_names", "info_xml", "info_packets", "info_response",
    "cat_chunks", "cat_response",
]

#: SeisComP's version string (HELLO line 1 and INFO ``software``).
SOFTWARE = "SeedLink v3.3 (2024.020)"

#: INFO level names in permission order (index = level).
from .inifile import INFO_LEVELS  # noqa: E402  (one list of level names)
ID, CAPABILITIES, STATIONS, STREAMS, GAPS, CONNECTIONS, ALL = range(7)
#: What an unknown level name maps to: above every permission.
UNKNOWN_LEVEL = len(INFO_LEVELS)

RECORD_LEN = 512
DATA_OFFSET = 64
#: XML bytes per INFO record.
INFO_DATA_LEN = RECORD_LEN - DATA_OFFSET

#: SeedLink 3.1 extensions (IRIS/ringserver style) a server may advertise
#: after `` :: `` in HELLO.  SeisComP's seedlink advertises none of them.
CAPABILITIES_31 = ("SLPROTO:3.1", "CAP", "EXTREPLY", "NSWILDCARD", "BATCH")

TYPES = "DECTLO"
_SEQ_MASK = 0xFFFFFF


def capabilities_31():
    """The 3.1 capability flags as HELLO lists them:
    ``SLPROTO:3.1 CAP EXTREPLY NSWILDCARD BATCH``."""
    return " ".join(CAPABILITIES_31)


def _b(text):
    """Python text -> the bytes SeisComP holds (UTF-8; surrogate-escaped
    undecodable input bytes come back as they were)."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    return str(text).encode("utf-8", "surrogateescape")


def _cstr(raw):
    """A C string stops at the first NUL."""
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def hello_response(software=SOFTWARE, description="", capabilities=None):
    """HELLO's reply: ``<software>[ :: <caps>]\\r\\n<description>\\r\\n``.
    SeisComP compatibility means ``capabilities=None`` (no `` :: `` part:
    libslink would send CAPABILITIES, which SeisComP answers with ERROR)."""
    first = _b(software)
    if capabilities:
        if not isinstance(capabilities, (str, bytes)):
            capabilities = " ".join(capabilities)
        first += b" :: " + _b(capabilities)
    return first + b"\r\n" + _b(description) + b"\r\n"


# ---------------------------------------------------------------------------
# Inputs.  Any object with the same attribute names works (e.g. the buffer's
# StreamInfo); these dataclasses are for convenience and tests.

@dataclass
class ServerInfo:
    software: str = SOFTWARE
    organization: str = ""
    started_us: int = 0                 # server start, us since the epoch


@dataclass
class InfoStream:
    location: str
    seedname: str
    type: str                           # one of DECTLO
    begin_time_us: int
    end_time_us: int
    begin_recno: int
    end_recno: int
    gap_check: bool = False
    gap_treshold: int = 0
    gaps: Sequence[Tuple[int, int]] = ()


@dataclass
class InfoConnection:
    host: str
    port: int
    ctime_us: int
    begin_seq: Optional[int] = None     # None (or -1) -> "unset"
    current_seq: Optional[int] = None
    sequence_gaps: int = 0
    txcount: int = 0
    begin_seq_valid: bool = False
    realtime: bool = True
    end_of_data: bool = False
    window: Optional[Tuple[Optional[int], Optional[int]]] = None   # (begin_us, end_us)
    selectors: Sequence[Any] = ()       # normalized strings, Selector objects or a SelectorSet


@dataclass
class InfoStation:
    name: str
    network: str
    description: str = ""
    begin_seq: int = 0
    end_seq: int = 0
    stream_check: bool = False
    streams: Sequence[Any] = ()
    connections: Sequence[Any] = ()
    #: who may see the station: None = everyone, a bool, or callable(ip) -> bool
    access: Union[None, bool, Callable[[str], bool]] = None


def info_level(level):
    """Level index of a name (case-insensitive) or int; unknown names and
    out-of-range numbers give UNKNOWN_LEVEL (refused for everyone)."""
    if isinstance(level, bool):
        return UNKNOWN_LEVEL
    if isinstance(level, int):
        return level if 0 <= level < UNKNOWN_LEVEL else UNKNOWN_LEVEL
    if isinstance(level, (bytes, bytearray)):
        level = bytes(level).decode("latin-1")
    if isinstance(level, str):
        name = level.lower()
        # strcasecmp is ASCII-only; str.lower() of ASCII names is the same
        if name.isascii():
            try:
                return INFO_LEVELS.index(name)
            except ValueError:
                pass
    return UNKNOWN_LEVEL


@dataclass
class CapabilityConfig:
    """The global keys that decide the capability list and the permissions:
    ``info``/``info_trusted`` (level names or indices),
    ``window_extraction[_trusted]``, ``websocket[_trusted]``."""
    info: Union[int, str] = ID
    info_trusted: Union[int, str] = ID
    window_extraction: bool = False
    window_extraction_trusted: bool = False
    websocket: bool = False
    websocket_trusted: bool = False

    def capabilities(self):
        """[(name, restricted)] in SeisComP's order; restricted ones are only
        shown to trusted clients."""
        caps = [("dialup", False), ("multistation", False)]
        if self.window_extraction:
            caps.append(("window-extraction", False))
        elif self.window_extraction_trusted:
            caps.append(("window-extraction", True))
        if self.websocket:
            caps.append(("websocket", False))
        elif self.websocket_trusted:
            caps.append(("websocket", True))
        untrusted = _config_level(self.info)
        trusted = _config_level(self.info_trusted)
        for i, name in enumerate(INFO_LEVELS):
            if i <= untrusted:
                caps.append(("info:" + name, False))
            elif i <= trusted:
                caps.append(("info:" + name, True))
        return caps

    def client(self, trusted, ip=""):
        """The ClientInfo of a client (trust fixed at accept time)."""
        untrusted = _config_level(self.info)
        if trusted:
            level = max(_config_level(self.info_trusted), untrusted)
            window = self.window_extraction_trusted or self.window_extraction
            websocket = self.websocket_trusted or self.websocket
        else:
            level, window, websocket = untrusted, self.window_extraction, self.websocket
        return ClientInfo(ip=ip, trusted=bool(trusted), info_level=level,
                          window_extraction=window, websocket=websocket)


def _config_level(level):
    n = info_level(level)
    return -1 if n == UNKNOWN_LEVEL else n


@dataclass
class ClientInfo:
    ip: str = ""
    trusted: bool = False
    info_level: int = ID                # the highest level this client may ask
    window_extraction: bool = False
    websocket: bool = False


@dataclass
class InfoContext:
    server: ServerInfo = field(default_factory=ServerInfo)
    stations: Sequence[Any] = ()        # registration order, incl. hidden ones
    capabilities: CapabilityConfig = field(default_factory=CapabilityConfig)


def info_refused(level, client):
    """True when SeisComP answers with the ERR document."""
    return info_level(level) > client.info_level


def capability_names(config, trusted):
    """The capability names INFO CAPABILITIES shows a (un)trusted client."""
    return [name for name, restricted in config.capabilities() if trusted or not restricted]


# ---------------------------------------------------------------------------
# Formatting

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def format_time(us):
    """``YYYY/MM/DD hh:mm:ss.ffff`` of us since the epoch (0.1 ms, truncated)."""
    days, rem = divmod(int(us), 86400000000)
    d = datetime.date.fromordinal(_EPOCH_ORDINAL + days)
    secs, usec = divmod(rem, 1000000)
    h, secs = divmod(secs, 3600)
    m, s = divmod(secs, 60)
    return "%d/%02d/%02d %02d:%02d:%02d.%04d" % (d.year, d.month, d.day, h, m, s, usec // 100)


_ESCAPES = {
    0x0A: b"&#10;", 0x0D: b"&#13;", 0x09: b"&#9;", 0x22: b"&quot;",
    0x3C: b"&lt;", 0x3E: b"&gt;", 0x26: b"&amp;",
}
_PLAIN = bytes(c for c in range(1, 128) if c not in _ESCAPES)


def _is_xml_char(v):
    return (v in (0x9, 0xA, 0xD) or 0x20 <= v <= 0xD7FF
            or 0xE000 <= v <= 0xFFFD or 0x10000 <= v <= 0x10FFFF)


def _hexref(v):
    return b"&#x%X;" % v


def escape_attr(value):
    """An attribute value as libxml2 2.9 writes it for a document without an
    encoding: ``& < > "`` and LF/CR/TAB become references; bytes >= 0x80 are
    read as UTF-8 and written as ``&#xHEX;`` (a byte that does not start a
    valid character becomes a reference to itself; a byte >= 0x80 in the
    last position is copied raw); other bytes are copied.  A NUL ends the
    value (C string).  Returns bytes."""
    raw = _cstr(_b(value))
    if not raw.translate(None, _PLAIN):
        return raw
    out = bytearray()
    n = len(raw)
    i = 0
    while i < n:
        c = raw[i]
        esc = _ESCAPES.get(c)
        if esc is not None:
            out += esc
            i += 1
            continue
        if c < 0x80 or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        if c < 0xC0:
            out += _hexref(c)
            i += 1
            continue
        length = 1
        val = 0
        if c < 0xE0:
            val = ((c & 0x1F) << 6) | (raw[i + 1] & 0x3F)
            length = 2
        elif c < 0xF0 and i + 2 < n:
            val = ((c & 0x0F) << 12) | ((raw[i + 1] & 0x3F) << 6) | (raw[i + 2] & 0x3F)
            length = 3
        elif c < 0xF8 and i + 3 < n:
            val = (((c & 0x07) << 18) | ((raw[i + 1] & 0x3F) << 12)
                   | ((raw[i + 2] & 0x3F) << 6) | (raw[i + 3] & 0x3F))
            length = 4
        if length == 1 or not _is_xml_char(val):
            out += _hexref(c)
            i += 1
            continue
        out += _hexref(val)
        i += length
    return bytes(out)


class _Element:
    """Just enough of a libxml2 tree: name, ordered attributes, children."""
    __slots__ = ("name", "attrs", "children")

    def __init__(self, name, attrs):
        self.name = name
        self.attrs = attrs
        self.children = []

    def add(self, name, attrs):
        child = _Element(name, attrs)
        self.children.append(child)
        return child

    def dump(self, out):
        out += b"<" + self.name
        for key, value in self.attrs:
            out += b" " + key + b'="' + escape_attr(value) + b'"'
        if not self.children:
            out += b"/>"
            return
        out += b">"
        for child in self.children:
            child.dump(out)
        out += b"</" + self.name + b">"


def _seq(value):
    if value is None or value < 0:
        return "unset"
    return "%06X" % (value & _SEQ_MASK)


def _int32(value):
    """C int printed with %d."""
    value = int(value) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _yes(flag):
    return "yes" if flag else "no"


def _enabled(flag):
    return "enabled" if flag else "disabled"


def _type_letter(t):
    if isinstance(t, int) and not isinstance(t, bool):
        return TYPES[t]
    return t


def _casekey(text):
    return _cstr(_b(text)).lower()


def _stream_key(stream):
    t = _type_letter(stream.type)
    return (_casekey(stream.location), _casekey(stream.seedname),
            TYPES.index(t) if t in TYPES else len(TYPES))


def _accessible(station, client):
    access = getattr(station, "access", None)
    if access is None:
        return True
    if callable(access):
        return bool(access(client.ip))
    return bool(access)


def _selector_patterns(selectors):
    if selectors is None:
        return []
    pats = getattr(selectors, "normalized", None)
    if pats is not None and not isinstance(pats, str):
        return list(pats)
    return [getattr(s, "normalized", s) for s in selectors]


def _root(server):
    return _Element(b"seedlink", [
        (b"software", server.software),
        (b"organization", server.organization),
        (b"started", format_time(server.started_us)),
    ])


def _add_stream(parent, s, level):
    el = parent.add(b"stream", [
        (b"location", s.location),
        (b"seedname", s.seedname),
        (b"type", _type_letter(s.type)),
        (b"begin_time", format_time(s.begin_time_us)),
        (b"end_time", format_time(s.end_time_us)),
        (b"begin_recno", "%06d" % s.begin_recno),
        (b"end_recno", "%06d" % s.end_recno),
        (b"gap_check", _enabled(s.gap_check)),
        (b"gap_treshold", "%d" % _int32(s.gap_treshold)),
    ])
    if level >= GAPS:
        for begin_us, end_us in (s.gaps or ()):
            el.add(b"gap", [(b"begin_time", format_time(begin_us)),
                            (b"end_time", format_time(end_us))])


def _add_connection(parent, c):
    el = parent.add(b"connection", [
        (b"host", c.host),
        (b"port", "%d" % c.port),
        (b"ctime", format_time(c.ctime_us)),
        (b"begin_seq", _seq(c.begin_seq)),
        (b"current_seq", _seq(c.current_seq)),
        (b"sequence_gaps", "%d" % _int32(c.sequence_gaps)),
        (b"txcount", "%d" % _int32(c.txcount)),
        (b"begin_seq_valid", _yes(c.begin_seq_valid)),
        (b"realtime", _yes(c.realtime)),
        (b"end_of_data", _yes(c.end_of_data)),
    ])
    window = getattr(c, "window", None)
    if window is not None and window[0] is not None:
        el.add(b"window", [
            (b"begin_time", format_time(window[0])),
            (b"end_time", "unset" if window[1] is None else format_time(window[1])),
        ])
    for pattern in _selector_patterns(getattr(c, "selectors", ())):
        el.add(b"selector", [(b"pattern", pattern)])


def _document(level, ctx, client):
    root = _root(ctx.server)
    if level == CAPABILITIES or level == ALL:
        for name in capability_names(ctx.capabilities, client.trusted):
            root.add(b"capability", [(b"name", name)])
    if level >= STATIONS:
        show_streams = STREAMS <= level <= GAPS or level == ALL
        for st in ctx.stations:
            if not _accessible(st, client):
                continue
            el = root.add(b"station", [
                (b"name", st.name),
                (b"network", st.network),
                (b"description", st.description),
                (b"begin_seq", "%06X" % (st.begin_seq & _SEQ_MASK)),
                (b"end_seq", "%06X" % (st.end_seq & _SEQ_MASK)),
                (b"stream_check", _enabled(st.stream_check)),
            ])
            if show_streams and st.stream_check:
                for s in sorted(st.streams, key=_stream_key):
                    _add_stream(el, s, level)
            if level >= CONNECTIONS:
                for c in (getattr(st, "connections", None) or ()):
                    _add_connection(el, c)
    return root


def _serialize(root):
    out = bytearray(b'<?xml version="1.0"?>\n')
    root.dump(out)
    out += b"\n"
    return bytes(out)


def info_xml(level, ctx, client):
    """The INFO document for a level name or index, as bytes.  A level
    the client may not ask for (or an unknown name) gives the bare root
    element (send it with ``error=True``)."""
    n = info_level(level)
    if n > client.info_level:
        return _serialize(_root(ctx.server))
    return _serialize(_document(n, ctx, client))


def info_packets(xml, *, error=False, now_us):
    """The SLINFO packets (8-byte header + 512-byte record) carrying xml."""
    channel = "ERR" if error else "INF"
    pieces = [xml[i:i + INFO_DATA_LEN] for i in range(0, len(xml), INFO_DATA_LEN)]
    packets = []
    last = len(pieces) - 1
    for seq, piece in enumerate(pieces):
        rec = bytearray(RECORD_LEN)
        rec[DATA_OFFSET:DATA_OFFSET + len(piece)] = piece
        _mseed.write_header(rec, "", "", "", channel, seq, int(now_us), len(piece), 0, 0, 0)
        packets.append((b"SLINFO  " if seq == last else b"SLINFO *") + bytes(rec))
    return packets


def info_response(level, ctx, client, *, now_us):
    """What the server writes for ``INFO <level>``: list of 520-byte packets."""
    refused = info_refused(level, client)
    return info_packets(info_xml(level, ctx, client), error=refused, now_us=now_us)


# ---------------------------------------------------------------------------
# CAT

def _cat_line(st):
    net = _b(st.network)
    name = _b(st.name)
    return net.rjust(2) + b" " + name.ljust(5) + b" " + _b(st.description) + b"\n"


def cat_chunks(stations, client=None):
    """CAT's text (one ``NN SSSSS description`` LF line per accessible
    station, registration order) cut into 512-byte chunks (the last one
    shorter); the server writes each chunk, then ``END`` after the last."""
    probe = client if client is not None else ClientInfo()
    text = b"".join(_cat_line(st) for st in stations if _accessible(st, probe))
    return [text[i:i + RECORD_LEN] for i in range(0, len(text), RECORD_LEN)]


def cat_response(stations, client=None):
    """All bytes of the CAT reply: chunks + ``END``; nothing at all when no
    station is accessible."""
    chunks = cat_chunks(stations, client)
    if not chunks:
        return b""
    return b"".join(chunks) + b"END"

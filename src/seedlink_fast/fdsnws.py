"""FDSN dataselect 1.1 over HTTP, served from the station buffers.

A small HTTP/1.1 server on its own port (``http_port`` / ``--http-port``)
of the SeedLink bind address.  A query returns what the buffers hold *now*
and ends, which is what polling clients need where SeedLink ``TIME`` would
wait for the end of the window (docs/fdsnws.md).

Records are sent as stored (512-byte miniSEED 2), "cut by record": every
data record whose time span overlaps [start, end) of a selection, in buffer
order per station, the stations in configuration order.  The station's
stream index, when ``stream_check`` is on, tells where the scan starts
(``position_for_time``) and lets it stop once every selected stream has
shown a record past the window end; without the index the whole buffer is
scanned.  Stations a client's address may not see (``access``) are
invisible, as in SeedLink.

Each connection carries one request (``Connection: close``).  The request
head and body are bounded in size and time; the response is chunked and
written with the transport's flow control, so a slow reader holds at most
one chunk in memory and never stalls the event loop.
"""
import asyncio
import email.utils
import logging
import re
import struct
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

from ._version import __version__
from .mseed import sample_rate_from_factors
from .records import RECORD_SIZE, record_type

log = logging.getLogger("seedlink_fast.fdsnws")

__all__ = ["DataselectServer", "HTTPLimits", "Query", "Selection", "QueryError",
           "parse_get", "parse_post", "parse_time_us", "SERVICE_VERSION"]

SERVICE_VERSION = "1.1.0"
BASE = "/fdsnws/dataselect/1"
MSEED_TYPE = "application/vnd.fdsn.mseed"

_US = 1000000
_READ_CHUNK = 256              # records per read_range while scanning
_OPEN_START = -(1 << 62)       # µs, before anything
_OPEN_END = 1 << 62


@dataclass
class HTTPLimits:
    max_head: int = 8192                # request line + headers, bytes
    max_body: int = 1 << 20             # POST body, bytes
    request_timeout: float = 30.0       # connect to complete request, seconds
    send_timeout: float = 60.0          # a client not reading for this long is dropped
    max_connections: int = 64           # concurrent HTTP connections
    max_bytes: int = 1 << 30            # response size: larger requests get 413
    write_chunk: int = 64 * 1024        # bytes per chunk written


_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Payload Too Large", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


class QueryError(Exception):
    """A request the service answers with an error status (400 unless told)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class _ClientGone(Exception):
    pass


# ---------------------------------------------------------------------------
# Query parameters

_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)"
                      r"(?:[T ](\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?)?Z?\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def parse_time_us(text):
    """Epoch µs of an FDSN time: ISO 8601 UTC, date only or with hours,
    minutes, seconds and fractions (truncated to µs), optional ``Z``."""
    m = _TIME_RE.match(text.strip())
    if not m:
        raise QueryError("invalid time: %r" % text)
    y, mo, d, hh, mi, ss, frac = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0),
                      tzinfo=timezone.utc)
    except ValueError as exc:
        raise QueryError("invalid time %r: %s" % (text, exc)) from None
    usec = int((frac or "0").ljust(6, "0")[:6])
    return (dt - _EPOCH) // _ONE_US + usec


_CODE_RE = re.compile(r"[A-Za-z0-9*?]*\Z")


def _codes(text, what):
    """A regex matching a comma-separated list of codes with * and ?
    (case-insensitive; location ``--`` is the empty location)."""
    alternatives = []
    for item in text.split(","):
        item = item.strip()
        if what == "location" and item == "--":
            item = ""
        if not _CODE_RE.match(item) or len(item) > 10:
            raise QueryError("invalid %s code: %r" % (what, item))
        if not item and what != "location":
            raise QueryError("empty %s code" % what)
        alternatives.append(re.escape(item).replace(r"\*", ".*").replace(r"\?", "."))
    return re.compile("(?:%s)\\Z" % "|".join(alternatives), re.IGNORECASE)


_MATCH_ALL = re.compile(".*", re.DOTALL)


@dataclass
class Selection:
    network: "re.Pattern" = _MATCH_ALL
    station: "re.Pattern" = _MATCH_ALL
    location: "re.Pattern" = _MATCH_ALL
    channel: "re.Pattern" = _MATCH_ALL
    start_us: int = _OPEN_START
    end_us: int = _OPEN_END

    def wants_station(self, st):
        return bool(self.network.match(st.network) and self.station.match(st.name))

    def wants_stream(self, location, channel):
        return bool(self.location.match(location) and self.channel.match(channel))

    def overlaps(self, start_us, end_us):
        # records with samples overlap [start, end); an instant record is in it
        if start_us >= self.end_us:
            return False
        return end_us > self.start_us or start_us >= self.start_us


@dataclass
class Query:
    selections: list
    quality: str = "B"
    minimumlength: float = 0.0
    longestonly: bool = False
    nodata: int = 204


_ALIASES = {"net": "network", "sta": "station", "loc": "location", "cha": "channel",
            "start": "starttime", "end": "endtime"}
_CODE_PARAMS = ("network", "station", "location", "channel")
_OPTION_PARAMS = ("quality", "minimumlength", "longestonly", "format", "nodata")
_QUALITIES = ("D", "R", "Q", "M", "B", "*")


def _options(query, params):
    """Apply the non-selection parameters (name -> value) to query."""
    for name, value in params.items():
        value = value.strip()
        if name == "quality":
            if value.upper() not in _QUALITIES:
                raise QueryError("invalid quality %r (D, R, Q, M, B or *)" % value)
            query.quality = value.upper()
        elif name == "minimumlength":
            try:
                query.minimumlength = float(value)
            except ValueError:
                raise QueryError("invalid minimumlength %r" % value) from None
            if not query.minimumlength >= 0:
                raise QueryError("minimumlength must be a number >= 0")
        elif name == "longestonly":
            if value.lower() not in ("true", "false"):
                raise QueryError("invalid longestonly %r (true or false)" % value)
            query.longestonly = value.lower() == "true"
        elif name == "format":
            if value.lower() not in ("miniseed", "mseed"):
                raise QueryError("unsupported format %r (miniseed only)" % value)
        elif name == "nodata":
            if value not in ("204", "404"):
                raise QueryError("invalid nodata %r (204 or 404)" % value)
            query.nodata = int(value)


def _canonical(pairs, allowed):
    params = {}
    for key, value in pairs:
        name = _ALIASES.get(key.lower(), key.lower())
        if name not in allowed:
            raise QueryError("unknown parameter: %s" % key)
        if name in params:
            raise QueryError("parameter given more than once: %s" % key)
        params[name] = value
    return params


def _window(sel, start, end):
    if start is not None:
        sel.start_us = parse_time_us(start)
    if end is not None:
        sel.end_us = parse_time_us(end)
    if sel.end_us <= sel.start_us:
        raise QueryError("end time must be after start time")


def parse_get(query_string):
    """The Query of a GET query string; QueryError if anything is wrong."""
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=100)
    except (ValueError, UnicodeError) as exc:
        raise QueryError("malformed query string: %s" % exc) from None
    params = _canonical(pairs, _CODE_PARAMS + _OPTION_PARAMS + ("starttime", "endtime"))
    sel = Selection()
    for name in _CODE_PARAMS:
        if name in params:
            setattr(sel, name, _codes(params[name], name))
    _window(sel, params.get("starttime"), params.get("endtime"))
    query = Query([sel])
    _options(query, params)
    return query


def parse_post(body):
    """The Query of a POST body: ``key=value`` lines, then one line per
    selection ``NET STA LOC CHA START END``."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise QueryError("the request body is not ASCII text") from None
    pairs = []
    selections = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line:
            if selections:
                raise QueryError("line %d: parameters must come before the selections"
                                 % lineno)
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value))
            continue
        fields = line.split()
        if len(fields) != 6:
            raise QueryError("line %d: expected NET STA LOC CHA START END, got %r"
                             % (lineno, line))
        sel = Selection(*(_codes(f, name) for f, name in zip(fields, _CODE_PARAMS)))
        start, end = fields[4], fields[5]
        _window(sel, None if start == "*" else start, None if end == "*" else end)
        selections.append(sel)
    if not selections:
        raise QueryError("no selection lines in the request body")
    query = Query(selections)
    _options(query, _canonical(pairs, _OPTION_PARAMS))
    return query


# ---------------------------------------------------------------------------
# Record headers (big-endian, as stored by the server)

# quality, location+channel, start time, samples, rate factor/multiplier,
# offset of the first blockette
_FSDH = struct.Struct(">6xc6x5s2xHHBBBxHHhh10xH").unpack_from
_BLOCKETTE = struct.Struct(">HH").unpack_from
_INT8 = struct.Struct(">b").unpack_from


@lru_cache(maxsize=4096)
def _day_us(year, doy):
    return (date(year, 1, 1).toordinal() - 719163 + doy - 1) * 86400 * _US


def _b1001_usec(rec, offset):
    """Blockette 1001's microsecond offset, 0 without one."""
    for _ in range(16):
        if offset < 48 or offset > RECORD_SIZE - 8:
            return 0
        btype, nxt = _BLOCKETTE(rec, offset)
        if btype == 1001:
            return _INT8(rec, offset + 5)[0]
        if nxt <= offset:
            return 0
        offset = nxt
    return 0


def data_span(rec):
    """(quality, start µs, end µs, sample period µs) of a data record, None
    for any other record (blank, log, timing, event, ...)."""
    if rec is None or rec[0] == 0 or record_type(rec) != "D":
        return None
    quality, _, year, doy, hh, mi, ss, fract, nsamp, factor, mult, boff = _FSDH(rec)
    try:
        day = _day_us(year, doy)
    except ValueError:
        return None
    start = day + ((hh * 60 + mi) * 60 + ss) * _US + fract * 100 + _b1001_usec(rec, boff)
    rate = sample_rate_from_factors(factor, mult)
    if rate <= 0:
        return chr(quality[0]), start, start, 0.0
    period = _US / rate
    return chr(quality[0]), start, start + round(nsamp * period), period


# ---------------------------------------------------------------------------
# Scanning one station's buffer

class _StationScan:
    """The records of one station wanted by a query, found chunk by chunk
    in buffer order between two positions fixed when the request came."""

    def __init__(self, station, selections, quality):
        self.station = station
        self.selections = selections
        self.quality = None if quality in ("B", "*") else quality
        self._streams = {}          # raw location+channel -> ((loc, cha), selections)
        buf = station.buffer
        self.end = buf.next_position
        self.pending = None         # stream -> window end; None: scan to the end
        if not buf.stream_check:
            self.start = buf.oldest_position
            return
        self.start = self.end
        for sel in selections:
            def wanted(loc, cha, typ, sel=sel):
                return typ == "D" and sel.wants_stream(loc, cha)
            pos = buf.position_for_time(sel.start_us, wanted)
            if pos is not None and pos < self.start:
                self.start = pos
        # stop early once each selected stream has a record starting past its
        # window end (the index knows every stream stored)
        pending = {}
        for s in buf.streams:
            if s.type != "D":
                continue
            ends = [sel.end_us for sel in selections if sel.wants_stream(s.location, s.seedname)]
            if ends:
                pending[(s.location, s.seedname)] = max(ends)
        self.start = max(self.start, buf.oldest_position)
        if not pending:
            self.start = self.end
        elif _OPEN_END not in pending.values():
            self.pending = pending

    @property
    def upper_bound(self):
        return max(0, self.end - self.start)

    def _stream(self, lc):
        entry = self._streams.get(lc)
        if entry is None:
            key = (lc[:2].decode("latin-1").rstrip(" "), lc[2:].decode("latin-1").rstrip(" "))
            sels = [s for s in self.selections if s.wants_stream(*key)]
            entry = self._streams[lc] = (key, sels)
        return entry

    def chunks(self):
        """Yield lists of (record, stream, start µs, end µs, period µs)."""
        buf = self.station.buffer
        pos, end = self.start, self.end
        pending = self.pending
        while pos < end:
            recs = buf.read_range(pos, min(_READ_CHUNK, end - pos))
            if not recs:
                # rotated out meanwhile, or a hole in the segment numbering
                nxt = buf.resume_position(pos)
                pos = nxt if nxt > pos else pos + 1
                continue
            pos += len(recs)
            found = []
            for rec in recs:
                if rec is None:
                    continue
                key, sels = self._stream(rec[13:18])
                if not sels:
                    continue
                span = data_span(rec)
                if span is None:
                    continue
                quality, t0, t1, period = span
                if pending is not None and key in pending and t0 >= pending[key]:
                    del pending[key]
                if self.quality is not None and quality != self.quality:
                    continue
                for sel in sels:
                    if sel.overlaps(t0, t1):
                        found.append((rec, key, t0, t1, period))
                        break
            yield found
            if pending is not None and not pending:
                return


def _segment_filter(matches, minimumlength, longestonly):
    """The matches of continuous segments (per stream, within half a sample)
    at least minimumlength seconds long; only the longest per stream with
    longestonly.  Buffer order is kept."""
    segments = {}               # stream -> list of [first index, last index, start, end]
    for i, (_, key, t0, t1, period) in enumerate(matches):
        segs = segments.setdefault(key, [])
        if segs and abs(t0 - segs[-1][3]) <= period / 2:
            segs[-1][1] = i
            segs[-1][3] = t1
        else:
            segs.append([i, i, t0, t1])
    keep = [False] * len(matches)
    for segs in segments.values():
        good = [s for s in segs if s[3] - s[2] >= minimumlength * _US]
        if longestonly and good:
            good = [max(good, key=lambda s: s[3] - s[2])]
        for s in good:
            first, last = s[0], s[1]
            key = matches[first][1]
            for i in range(first, last + 1):
                if matches[i][1] == key:
                    keep[i] = True
    return [m for m, k in zip(matches, keep) if k]


# ---------------------------------------------------------------------------
# Static documents

_HELP = """FDSN dataselect web service 1.1 (seedlink-fast %(version)s)

Returns the miniSEED records held in the SeedLink server's buffers now.

  %(base)s/query?net=NET&sta=STA&loc=LOC&cha=CHA&start=TIME&end=TIME
  POST %(base)s/query   body: key=value lines, then NET STA LOC CHA START END lines
  %(base)s/version
  %(base)s/application.wadl

Parameters: network|net, station|sta, location|loc (-- = empty), channel|cha
(comma lists, wildcards * and ?), starttime|start, endtime|end (ISO 8601 UTC),
quality (D, R, Q, M, B, *), minimumlength (s), longestonly (true|false),
format (miniseed), nodata (204|404).
Every data record overlapping the window is returned whole.
"""

_WADL_PARAMS = (
    ("starttime", "xsd:dateTime"), ("endtime", "xsd:dateTime"), ("network", "xsd:string"),
    ("station", "xsd:string"), ("location", "xsd:string"), ("channel", "xsd:string"),
    ("quality", "xsd:string"), ("minimumlength", "xsd:float"),
    ("longestonly", "xsd:boolean"), ("format", "xsd:string"), ("nodata", "xsd:int"))


def _wadl(base_url):
    params = "\n".join('          <param name="%s" style="query" type="%s"/>' % p
                       for p in _WADL_PARAMS)
    errors = '<response status="204 400 404 413 500 503">' \
             '<representation mediaType="text/plain"/></response>'
    return """<?xml version="1.0" encoding="UTF-8"?>
<application xmlns="http://wadl.dev.java.net/2009/02"
             xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <resources base="%(base)s">
    <resource path="/">
      <method name="GET"><response><representation mediaType="text/plain"/></response></method>
    </resource>
    <resource path="query">
      <method name="GET" id="query">
        <request>
%(params)s
        </request>
        <response status="200"><representation mediaType="%(mseed)s"/></response>
        %(errors)s
      </method>
      <method name="POST" id="postQuery">
        <request><representation mediaType="text/plain"/></request>
        <response status="200"><representation mediaType="%(mseed)s"/></response>
        %(errors)s
      </method>
    </resource>
    <resource path="version">
      <method name="GET"><response><representation mediaType="text/plain"/></response></method>
    </resource>
    <resource path="application.wadl">
      <method name="GET">
        <response><representation mediaType="application/xml"/></response>
      </method>
    </resource>
  </resources>
</application>
""" % dict(base=base_url, params=params, mseed=MSEED_TYPE, errors=errors)


# ---------------------------------------------------------------------------
# HTTP

class _Request:
    __slots__ = ("method", "target", "version", "headers")

    def __init__(self, method, target, version, headers):
        self.method, self.target, self.version, self.headers = method, target, version, headers


_HOST_RE = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}\Z")
# origin or absolute form; no spaces or control characters
_TARGET_RE = re.compile(r"(?:[Hh][Tt][Tt][Pp][Ss]?://[\x21-\x2e\x30-\x7e]*)?/[\x21-\x7e]*\Z")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def _parse_head(raw):
    lines = raw.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not _TOKEN_RE.match(parts[0]) or not _TARGET_RE.match(parts[1]) \
            or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise QueryError("malformed request line")
    headers = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.match(name):
            raise QueryError("malformed header line")
        headers[name.lower()] = value.strip()
    return _Request(parts[0], parts[1], parts[2], headers)


def _http_date(seconds=None):
    return email.utils.formatdate(seconds, usegmt=True)


class _Connection(asyncio.Protocol):
    """One HTTP connection: read one request, answer it, close."""

    def __init__(self, service):
        self.service = service
        self.limits = service.limits
        self.transport = None
        self.peer = ("?", 0)
        self.buf = bytearray()
        self.request = None
        self.body_length = 0
        self.task = None
        self.timer = None
        self.paused = False
        self.waiter = None
        self.head_sent = False
        self.chunked = False
        self.status = 0
        self.sent = 0

    # -- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        connections = self.service.connections
        connections.add(self)
        if len(connections) > self.limits.max_connections:
            self._finish_with_error(QueryError("too many connections", 503))
            return
        self.timer = asyncio.get_running_loop().call_later(self.limits.request_timeout,
                                                           self._request_timeout)

    def connection_lost(self, exc):
        self.service.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport = None

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def data_received(self, data):
        if self.task is not None or self.transport is None or self.buf is None:
            return                  # one request per connection; the rest is ignored
        self.buf += data
        try:
            if self.request is None and not self._read_head():
                return
            if len(self.buf) < self.body_length:
                return
        except QueryError as exc:
            self._finish_with_error(exc)
            return
        body = bytes(self.buf[:self.body_length])
        self.buf = None
        self.timer.cancel()
        self.task = asyncio.get_running_loop().create_task(self._respond(body))

    def _read_head(self):
        limit = self.limits.max_head
        end = self.buf.find(b"\r\n\r\n", 0, limit + 4)
        skip = 4
        if end < 0:
            end = self.buf.find(b"\n\n", 0, limit + 2)
            skip = 2
        if end < 0:
            if len(self.buf) > limit:
                raise QueryError("request head larger than %d bytes" % limit, 431)
            return False
        self.request = req = _parse_head(bytes(self.buf[:end]))
        del self.buf[:end + skip]
        if req.method == "POST":
            if "transfer-encoding" in req.headers:
                raise QueryError("chunked request bodies are not supported; "
                                 "send Content-Length", 411)
            length = req.headers.get("content-length")
            if length is None or not length.isdigit():
                raise QueryError("POST needs a Content-Length", 411)
            self.body_length = int(length)
            if self.body_length > self.limits.max_body:
                raise QueryError("request body larger than %d bytes" % self.limits.max_body,
                                 413)
            if req.headers.get("expect", "").lower() == "100-continue" and \
                    len(self.buf) < self.body_length:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _request_timeout(self):
        self.timer = None
        if self.transport is not None and self.task is None:
            self._finish_with_error(QueryError("request not complete within %g s"
                                               % self.limits.request_timeout, 408))

    # -- responses -----------------------------------------------------------------

    def _finish_with_error(self, exc):
        """Answer a request that never got to _respond, then close."""
        self.buf = None
        if self.timer is not None:
            self.timer.cancel()
        self._send_error(exc)
        self._close()

    def _close(self):
        if self.transport is not None:
            self.transport.close()

    def _write_head(self, status, content_type=None, length=None, extra=()):
        lines = ["HTTP/1.1 %d %s" % (status, _REASONS.get(status, "Error")),
                 "Date: " + _http_date(), "Server: seedlink-fast/" + __version__,
                 "Connection: close", "Access-Control-Allow-Origin: *"]
        if content_type:
            lines.append("Content-Type: " + content_type)
        if length is not None:
            lines.append("Content-Length: %d" % length)
        lines.extend(extra)
        self.status = status
        self.head_sent = True
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _send(self, status, body=b"", content_type="text/plain; charset=utf-8", extra=()):
        if self.transport is None:
            return
        if status == 204:
            self._write_head(204, extra=extra)
            return
        self._write_head(status, content_type, len(body), extra)
        self.transport.write(body)
        self.sent += len(body)

    def _send_error(self, exc):
        status = exc.status
        target = self.request.target if self.request is not None else ""
        text = ("Error %d: %s\n\n%s\n\nUsage details are available from %s/\n\n"
                "Request:\n%s\n\nRequest Submitted:\n%s\n\nService version:\n%s\n"
                % (status, _REASONS.get(status, "Error"), exc, BASE, target,
                   datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                   SERVICE_VERSION))
        extra = ("Allow: GET, POST",) if status == 405 else ()
        self._send(status, text.encode("utf-8", "replace"), extra=extra)

    async def _respond(self, body):
        req = self.request
        started = time.monotonic()
        try:
            await self._route(req, body)
        except QueryError as exc:
            if not self.head_sent:
                self._send_error(exc)
        except _ClientGone:
            pass
        except Exception:               # never let a request reach the SeedLink side
            log.exception("%s: FDSN request %s failed", self.peer[0], req.target[:200])
            if not self.head_sent:
                self._send_error(QueryError("internal error", 500))
        finally:
            log.info("%s:%d FDSN %s %s -> %d, %d bytes, %.3f s", self.peer[0], self.peer[1],
                     req.method, req.target[:200], self.status, self.sent,
                     time.monotonic() - started)
            self._close()

    async def _route(self, req, body):
        if req.method not in ("GET", "POST"):
            raise QueryError("method %s not allowed" % req.method, 405)
        url = urlsplit(req.target)
        path = url.path
        if path == BASE + "/query":
            if req.method == "GET":
                query = parse_get(url.query)
            else:
                if url.query:
                    raise QueryError("POST takes its parameters from the body")
                query = parse_post(body)
            await self._query(query)
            return
        if req.method != "GET":
            raise QueryError("method %s not allowed here" % req.method, 405)
        if path in (BASE, BASE + "/"):
            self._send(200, (_HELP % dict(version=__version__, base=BASE)).encode())
        elif path == BASE + "/version":
            self._send(200, SERVICE_VERSION.encode())
        elif path == BASE + "/application.wadl":
            host = req.headers.get("host", "")
            if not _HOST_RE.match(host):
                host = "%s:%d" % (self.service.host, self.service.port)
            self._send(200, _wadl("http://%s%s/" % (host, BASE)).encode(),
                       "application/xml")
        elif path == "/version":
            self._send(200, __version__.encode())
        else:
            raise QueryError("not found: %s" % path, 404)

    async def _drain(self):
        """Wait while the transport's buffer is full; yield to the loop
        otherwise, so a large response never stalls other clients."""
        if self.transport is None:
            raise _ClientGone()
        if not self.paused:
            await asyncio.sleep(0)
        else:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, self.limits.send_timeout)
            except asyncio.TimeoutError:
                log.info("%s:%d FDSN client not reading for %g s, dropped", self.peer[0],
                         self.peer[1], self.limits.send_timeout)
                if self.transport is not None:
                    self.transport.abort()
                raise _ClientGone() from None
            finally:
                self.waiter = None
        if self.transport is None or self.transport.is_closing():
            raise _ClientGone()

    def _write_data(self, parts):
        data = b"".join(parts)
        if not self.head_sent:
            # HTTP/1.0 clients read until the connection closes
            self.chunked = self.request.version == "HTTP/1.1"
            self._write_head(200, MSEED_TYPE, extra=(
                ("Transfer-Encoding: chunked",) if self.chunked else ()) + (
                "Content-Disposition: attachment; filename=fdsnws-dataselect_%s.mseed"
                % time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime()),))
        if self.chunked:
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.transport.write(data)
        self.sent += len(data)

    async def _query(self, query):
        scans = self.service.scans(query, self.peer[0])
        if sum(s.upper_bound for s in scans) * RECORD_SIZE > self.limits.max_bytes:
            count = 0
            for scan in scans:
                for found in scan.chunks():
                    count += len(found)
                    await self._drain()
            if count * RECORD_SIZE > self.limits.max_bytes:
                raise QueryError("the request selects %d records (%d bytes), more than the "
                                 "limit of %d bytes; narrow it down" % (
                                     count, count * RECORD_SIZE, self.limits.max_bytes), 413)
            scans = self.service.scans(query, self.peer[0])
        pending, size = [], 0
        whole = query.minimumlength > 0 or query.longestonly
        for scan in scans:
            collected = []
            for found in scan.chunks():
                if whole:
                    collected.extend(found)
                else:
                    pending.extend(m[0] for m in found)
                    size += len(found) * RECORD_SIZE
                    if size >= self.limits.write_chunk:
                        self._write_data(pending)
                        pending, size = [], 0
                await self._drain()
            if collected:
                kept = _segment_filter(collected, query.minimumlength, query.longestonly)
                step = max(1, self.limits.write_chunk // RECORD_SIZE)
                for i in range(0, len(kept), step):
                    self._write_data([m[0] for m in kept[i:i + step]])
                    await self._drain()
        if pending:
            self._write_data(pending)
        if not self.head_sent:
            if query.nodata == 404:
                raise QueryError("no data matches the request", 404)
            self._send(204)
        elif self.chunked:
            self.transport.write(b"0\r\n\r\n")


class DataselectServer:
    """The HTTP listener of one SeedLink server (``server.stations``)."""

    def __init__(self, server, limits=None):
        self.server = server
        self.limits = limits or HTTPLimits()
        self.connections = set()
        self.listener = None
        self.host = None
        self.port = None

    async def start(self, host, port):
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(lambda: _Connection(self), host, port,
                                                 reuse_address=True)
        self.host = host
        self.port = self.listener.sockets[0].getsockname()[1]

    def close(self):
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    def scans(self, query, ip):
        """The station scans of a query for a client address: stations in
        configuration order, only those the address may see."""
        out = []
        for st in self.server.stations:
            sels = [s for s in query.selections if s.wants_station(st)]
            if sels and st.access.allows(ip):
                scan = _StationScan(st, sels, query.quality)
                if scan.upper_bound:
                    out.append(scan)
        return out

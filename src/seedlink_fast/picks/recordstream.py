"""Where waveforms come from, named by SeisComP RecordStream-style URLs.

=====================================  ===========================================
``slink://host[:port][?timeout=S&idle=S]``  SeedLink 3 (port 18000): real time for the
                                        streaming client, ``TIME`` windows
                                        (dial-up) for the polling client
``fdsnws://host[:port][/path]``         FDSN dataselect over http (port 80); the
                                        default path is ``/fdsnws/dataselect/1/query``
``fdsnwss://...``                       the same over https (port 443)
``http://...``, ``https://...``         FDSN dataselect at that address (path as
                                        for ``fdsnws``)
``sdsarchive:///abs/dir``,              an SDS directory tree (several separated by
``sdsarchive://rel/dir[,dir2]``         commas); ``sdsarchive://`` alone is
                                        ``$SEISCOMP_ROOT/var/lib/archive``
=====================================  ===========================================

For ``fdsnws``/``http`` a path ending in ``/query`` (or ``/queryauth``) is
used as given, one ending in ``/dataselect/1`` gets ``/query`` appended, and
any other path is a prefix for ``/fdsnws/dataselect/1/query``.  Query
options: ``?method=get`` (default POST, one request for all streams),
``?timeout=S``.

Every archive source has ``fetch(requests) -> [Rec]`` with requests
``[(net, sta, loc, cha, t0_ns, t1_ns)]``: the records overlapping each
window, as the source holds them now (nothing is waited for).

>>> parse_url("fdsnws://127.0.0.1:8080").endpoint
'http://127.0.0.1:8080/fdsnws/dataselect/1/query'
>>> parse_url("sdsarchive:///data/sds").roots
['/data/sds']
"""
import collections
import datetime
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..errors import RecordError
from ..mseed import unpack
from .model import NS
from .seedlink import SeedLinkDialup
from .window import split_records

__all__ = ["RecordURL", "parse_url", "open_archive", "FdsnDataselect", "SdsArchive",
           "DataSourceError", "sds_path", "write_sds"]

log = logging.getLogger("seedlink_fast.picks")

DATASELECT_PATH = "/fdsnws/dataselect/1/query"
_DAY_NS = 86400 * NS


class DataSourceError(OSError):
    """A data source failed (HTTP error, unreachable server ...)."""


@dataclass
class RecordURL:
    """A parsed data URL: ``kind`` is ``slink``, ``fdsn`` or ``sds``."""

    url: str
    kind: str
    host: Optional[str] = None
    port: Optional[int] = None
    endpoint: Optional[str] = None          # fdsn: the full query URL
    roots: List[str] = field(default_factory=list)     # sds
    options: dict = field(default_factory=dict)

    def option(self, name, default, cast=float):
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return cast(value)
        except ValueError:
            raise ValueError("%s: bad value %r for %s" % (self.url, value, name)) from None


def _dataselect_path(path):
    path = path.rstrip("/")
    if path.endswith("/query") or path.endswith("/queryauth"):
        return path
    if path.endswith("/dataselect/1"):
        return path + "/query"
    return path + DATASELECT_PATH


def parse_url(url):
    """A RecordURL for `url` (see module docs); ValueError when unknown."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError("%r is not a URL (want slink://, fdsnws://, http://, sdsarchive://)"
                         % url)
    rest, _, query = rest.partition("?")
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if scheme == "sdsarchive":
        if not rest:
            rest = os.path.join(os.environ.get("SEISCOMP_ROOT", "/opt/seiscomp"),
                                "var", "lib", "archive")
        return RecordURL(url, "sds", roots=[r for r in rest.split(",") if r], options=options)
    parts = urllib.parse.urlsplit("x://" + rest)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("%r: bad port" % url) from None
    host = parts.hostname or "localhost"
    if scheme in ("slink", "slink3"):
        return RecordURL(url, "slink", host=host, port=port or 18000, options=options)
    if scheme in ("fdsnws", "fdsnwss", "http", "https"):
        secure = scheme in ("fdsnwss", "https")
        port = port or (443 if secure else 80)
        netloc = "%s:%d" % ("[%s]" % host if ":" in host else host, port)
        if parts.username:
            netloc = "%s@%s" % (parts.username + (":" + parts.password if parts.password
                                                  else ""), netloc)
        endpoint = "%s://%s%s" % ("https" if secure else "http", netloc,
                                  _dataselect_path(parts.path))
        return RecordURL(url, "fdsn", host=host, port=port, endpoint=endpoint, options=options)
    raise ValueError("unsupported data URL scheme %r in %r" % (scheme, url))


def open_archive(url, timeout=30.0):
    """An object with ``fetch(requests)`` for a URL (a string or RecordURL):
    SeedLink dial-up, FDSN dataselect or SDS."""
    spec = parse_url(url) if isinstance(url, str) else url
    timeout = spec.option("timeout", timeout)
    if spec.kind == "slink":
        return SeedLinkDialup(spec.host, spec.port, timeout=timeout,
                              idle=spec.option("idle", 2.0))
    if spec.kind == "fdsn":
        return FdsnDataselect(spec.endpoint, timeout=timeout,
                              method=spec.options.get("method", "post"))
    return SdsArchive(spec.roots)


def merge_requests(requests):
    """The same requests with overlapping windows of a stream merged (many
    picks on one station ask for mostly the same records)."""
    spans = {}
    for net, sta, loc, cha, t0, t1 in requests:
        spans.setdefault((net, sta, loc, cha), []).append((t0, t1))
    out = []
    for codes, windows in spans.items():
        windows.sort()
        start, end = windows[0]
        for t0, t1 in windows[1:]:
            if t0 > end:
                out.append(codes + (start, end))
                start = t0
            end = max(end, t1)
        out.append(codes + (start, end))
    return out


def _fdsn_time(ns):
    seconds, rest = divmod(int(ns), NS)
    stamp = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + ".%06d" % (rest // 1000)


class FdsnDataselect:
    """An FDSN dataselect client on urllib (no ObsPy needed).

    POST sends one request for all selections (``NET STA LOC CHA START
    END`` lines, ``--`` for an empty location); GET one request per
    selection.  204 and 404 mean no data; other errors raise
    DataSourceError.
    """

    def __init__(self, endpoint, timeout=30.0, method="post", max_bytes=1 << 30):
        method = method.lower()
        if method not in ("get", "post"):
            raise ValueError("method must be get or post, not %r" % method)
        self.endpoint = endpoint
        self.timeout = timeout
        self.method = method
        self.max_bytes = max_bytes

    def __repr__(self):
        return self.endpoint

    def _open(self, request):
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                if resp.status == 204:
                    return b""
                data = resp.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            if exc.code in (204, 404):
                return b""
            detail = exc.read(300).decode("utf-8", "replace").strip()
            raise DataSourceError("%s: HTTP %d %s" % (self.endpoint, exc.code, detail)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise DataSourceError("%s: %s" % (self.endpoint, getattr(exc, "reason", exc))) \
                from None
        if len(data) > self.max_bytes:
            raise DataSourceError("%s: response larger than %d bytes" % (self.endpoint,
                                                                          self.max_bytes))
        return data

    def fetch(self, requests):
        requests = merge_requests(requests)
        if not requests:
            return []
        if self.method == "post":
            lines = ["%s %s %s %s %s %s" % (net, sta, loc or "--", cha, _fdsn_time(t0),
                                            _fdsn_time(t1))
                     for net, sta, loc, cha, t0, t1 in requests]
            body = ("\n".join(lines) + "\n").encode("ascii")
            req = urllib.request.Request(self.endpoint, data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
            return split_records(self._open(req))
        out = []
        for net, sta, loc, cha, t0, t1 in requests:
            query = urllib.parse.urlencode(dict(net=net, sta=sta, loc=loc or "--", cha=cha,
                                                start=_fdsn_time(t0), end=_fdsn_time(t1)))
            out.extend(split_records(self._open(self.endpoint + "?" + query)))
        return out


def sds_path(root, net, sta, loc, cha, year, doy):
    """``root/YEAR/NET/STA/CHA.D/NET.STA.LOC.CHA.D.YEAR.DOY``."""
    return os.path.join(str(root), "%04d" % year, net, sta, "%s.D" % cha,
                        "%s.%s.%s.%s.D.%04d.%03d" % (net, sta, loc, cha, year, doy))


def _year_doy(ns):
    tm = (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=ns // NS)).timetuple()
    return tm.tm_year, tm.tm_yday


def write_sds(root, records):
    """Append records (``Rec``) to the day files of an SDS tree, each in the
    file of its start day (a convenience for tests and for archiving what
    the clients fetched)."""
    files = collections.defaultdict(list)
    for rec in records:
        net, sta, loc, cha = rec.stream.split(".")
        files[sds_path(root, net, sta, loc, cha, *_year_doy(rec.start_ns))].append(rec.raw)
    for path, raws in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(b"".join(raws))
    return sorted(files)


class _FileIndex:
    """Start, end, offset and length of every data record of one file."""

    __slots__ = ("stamp", "stream", "starts", "ends", "offsets", "lengths")

    def __init__(self, path, stamp):
        self.stamp = stamp
        with open(path, "rb") as fh:
            data = fh.read()
        rows = []
        try:
            parsed = unpack(data, decode=False)
        except RecordError as exc:
            log.warning("%s: %s; reading it record by record", path, exc)
            parsed = []
            for off in range(0, len(data) - 511, 512):
                try:
                    one = unpack(data[off:off + 512], decode=False)
                except RecordError:
                    continue
                for rec in one:
                    rec.offset = off
                parsed.extend(one)
        for rec in parsed:
            if rec.sample_rate and rec.num_samples > 0:
                rows.append((rec.starttime_ns, rec.endtime_ns, rec.offset, rec.record_length,
                             rec.id))
        rows.sort()
        self.stream = [r[4] for r in rows]
        table = np.array([r[:4] for r in rows], dtype=np.int64).reshape(-1, 4)
        self.starts, self.ends, self.offsets, self.lengths = table.T

    def select(self, t0, t1):
        return np.flatnonzero((self.starts <= t1) & (self.ends >= t0))


class SdsArchive:
    """Read windows from SDS trees.  A window reads the day files from the
    day before its start (a record may begin before midnight) to the day of
    its end.  The record index of each file is cached (up to
    ``cache_files`` files) and rebuilt when the file's size or mtime
    changes, so polling the same day again costs only the reads."""

    def __init__(self, roots, cache_files=64):
        self.roots = [roots] if isinstance(roots, str) else list(roots)
        self.cache_files = cache_files
        self._cache = collections.OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self):
        return "sdsarchive://" + ",".join(self.roots)

    def _index(self, path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            index = self._cache.get(path)
            if index is not None and index.stamp == stamp:
                self._cache.move_to_end(path)
                return index
        index = _FileIndex(path, stamp)
        with self._lock:
            self._cache[path] = index
            while len(self._cache) > self.cache_files:
                self._cache.popitem(last=False)
        return index

    def fetch(self, requests):
        out = []
        for net, sta, loc, cha, t0, t1 in merge_requests(requests):
            sid = "%s.%s.%s.%s" % (net, sta, loc, cha)
            day = (t0 // _DAY_NS - 1) * _DAY_NS
            while day <= t1:
                for root in self.roots:
                    path = sds_path(root, net, sta, loc, cha, *_year_doy(day))
                    index = self._index(path)
                    if index is None:
                        continue
                    rows = [i for i in index.select(t0, t1) if index.stream[i] == sid]
                    if rows:
                        out.extend(self._read(path, index, rows, sid))
                day += _DAY_NS
        return out

    @staticmethod
    def _read(path, index, rows, sid):
        raws = []
        with open(path, "rb") as fh:
            for i in rows:
                fh.seek(int(index.offsets[i]))
                raws.append(fh.read(int(index.lengths[i])))
        return [r for r in split_records(b"".join(raws)) if r.stream == sid]

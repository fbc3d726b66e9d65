"""Per-station record buffer: memory ring, SeisComP-compatible disk segments
and the stream index (``stream_check``).

Disk layout (the same as SeisComP's ``seedlink``, so either server can take
over the other's buffer directory)::

    <filebase>/<station key>/segments/<16 upper-case hex digits>
    <filebase>/<station key>/buffer.xml        (only between a clean shutdown
                                                and the next start)

A segment file is a plain concatenation of 512-byte records; its name is the
64-bit running record count (*position*) of its first record.  The SeedLink
sequence number of a record is ``position % 2**24``.  A new segment starts
when the current one holds ``segsize`` records; when more than ``segments``
files exist the oldest is deleted.  Records are written with ``write()`` as
they arrive (no fsync unless ``sync_writes``), before any client can see
them.

The stream index follows SeisComP's ``StreamMonitor`` exactly, because it
decides INFO STREAMS/GAPS, ``buffer.xml`` and where TIME / DATA-with-time
requests start: per (location, channel, type) the first/last record times
(header start time only, 0.1 ms resolution; the end is ``start + n/rate``
with SeisComP's floating point), header record numbers, sequence numbers,
gaps (begin/end pairs, also for overlaps) and one entry per disk segment.

Differences from SeisComP, all deliberate:

* **No blank records after a crash.**  SeisComP appends ``blanks`` all-zero
  records when it starts without ``buffer.xml``, to push new sequence
  numbers away from any a client might have seen before the crash.  Here
  every record is on disk before a client can see it, so no delivered
  sequence number can ever be reused, and skipping numbers would make a
  client resuming with ``DATA <last+1>`` jump over real data.  ``blanks``
  is therefore ignored.
* **Torn records are dropped, not fatal.**  A segment whose size is not a
  multiple of 512 (a crash in the middle of a write) is truncated to its
  complete records; SeisComP refuses to start.
* ``buffer.xml`` is trusted only if it matches the disk: its ``end_seq``
  must equal the next sequence number and its ``segment_count`` must not
  be smaller than the number of segment files (when it is larger, because
  ``segments`` was lowered and old files were deleted at startup, the
  oldest index entries are dropped as if those files had rotated out).
  Otherwise, and when it cannot be parsed, the index is rebuilt from the
  record headers (SeisComP rebuilds only on parse errors).
* ``stream_check`` comes from the configuration, not from ``buffer.xml``
  (SeisComP lets the saved value override it); enabling it over a buffer
  saved without it rebuilds the index from disk.  As in SeisComP, streams
  restored from ``buffer.xml`` keep their saved ``gap_check`` and
  ``gap_treshold`` (a saved 0 becomes 100); new streams use the config.
* ``buffer.xml`` is written to a temporary file and renamed into place.

A hole in the segment numbering (files renamed or removed by hand, or a
torn record in a segment other than the newest) leaves positions that
cannot be read although they lie between ``oldest_position`` and
``next_position``: ``read_range`` stops there and ``resume_position`` gives
the next readable position.
"""
import errno
import logging
import math
import os
import re
import struct
import xml.etree.ElementTree as ET
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import List, Tuple

from .mseed import sample_rate_from_factors
from .records import MAX_HEADER_SIZE, RECORD_SIZE, TYPES, record_type

log = logging.getLogger("seedlink_fast.buffer")

__all__ = ["StationBuffer", "StreamInfo", "SegmentInfo", "format_time", "parse_time",
           "SEQ_MOD", "SEQ_MASK"]

SEQ_MOD = 1 << 24
SEQ_MASK = SEQ_MOD - 1
_US = 1000000
_DAY_US = 86400 * _US
_SEGMENT_NAME = re.compile(r"[0-9A-Fa-f]{1,16}\Z")
_TYPE_ORDER = {t: i for i, t in enumerate(TYPES)}
_MAX_OPEN_READERS = 8          # cached read descriptors per station
_REBUILD_CHUNK = 2048          # records per read while rebuilding the index

# fixed header: sequence number, location+channel, start time, samples, rate,
# offset of the first blockette (big-endian, as libslink's sl_fsdh_s)
_HDR = struct.Struct(">6s7x5s2xHHBBBxHHhh10xH").unpack_from
_BLK = struct.Struct(">HH").unpack_from


# ---------------------------------------------------------------------------
# Time: epoch microseconds, without leap seconds (SeisComP's qtime.cc has no
# leap-second support either, so every difference is plain arithmetic).

def _days_from_civil(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def _is_leap(year):
    return year % 400 == 0 or (year % 4 == 0 and year % 100 != 0)


_DOY = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def year_start_days(year):
    """Days from 1970-01-01 to 1 January of year."""
    return _days_from_civil(year, 1, 1)


def format_time(us):
    """SeisComP's INFO/buffer.xml time: ``%d/%02d/%02d %02d:%02d:%02d.%04d``,
    truncated to 0.1 ms."""
    days, rem = divmod(us, _DAY_US)
    y, m, d = _civil_from_days(days)
    secs, usec = divmod(rem, _US)
    hh, secs = divmod(secs, 3600)
    mm, ss = divmod(secs, 60)
    return "%d/%02d/%02d %02d:%02d:%02d.%04d" % (y, m, d, hh, mm, ss, usec // 100)


_TIME_RE = re.compile(r"\s*([+-]?\d+)/\s*([+-]?\d+)/\s*([+-]?\d+)\s+([+-]?\d+):\s*([+-]?\d+):"
                      r"\s*([+-]?\d+)\.\s*([+-]?\d+)\Z")


def parse_time(text):
    """Epoch µs of a buffer.xml time (``Y/M/D h:m:s.tttt``, SeisComP's range
    checks); ValueError if invalid."""
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError("bad time %r" % text)
    year, month, day, hour, minute, sec, tms = (int(g) for g in m.groups())
    usec = tms * 100
    if not (1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31 and 0 <= hour <= 23
            and 0 <= minute <= 59 and 0 <= sec <= 61 and 0 <= usec <= 999999):
        raise ValueError("time out of range %r" % text)
    doy = _DOY[month - 1] + (_is_leap(year) and month >= 3) + day
    return ((year_start_days(year) + doy - 1) * 86400 + (hour * 60 + minute) * 60 + sec) \
        * _US + usec


def _scan_recno(raw):
    """sscanf("%6d") of the header sequence number (slow path)."""
    m = re.match(rb"\s*([+-]?\d+)", raw)
    return int(m.group(1)) if m else 0


def _c_mod(a, b):
    """C's % (truncating) for the rare negative record number."""
    r = abs(a) % b
    return -r if a < 0 else r


def _xml_attr(value):
    """libxml2's escaping of an attribute value (C string: stops at NUL)."""
    nul = value.find("\0")
    if nul >= 0:
        value = value[:nul]
    out = []
    for ch in value:
        o = ord(ch)
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"':
            out.append("&quot;")
        elif ch == "\n":
            out.append("&#10;")
        elif ch == "\r":
            out.append("&#13;")
        elif ch == "\t":
            out.append("&#9;")
        elif o >= 0x80:
            out.append("&#x%X;" % o)
        else:
            out.append(ch)
    return "".join(out)


_POSIX_CLASSES = {
    "[:alpha:]": "a-zA-Z", "[:digit:]": "0-9", "[:alnum:]": "a-zA-Z0-9",
    "[:upper:]": "A-Z", "[:lower:]": "a-z", "[:space:]": r" \t\n\r\f\v",
    "[:xdigit:]": "0-9A-Fa-f", "[:punct:]": r"!-/:-@\[-`{-~", "[:blank:]": r" \t",
}


def _compile_gap_pattern(pattern):
    """gap_check_pattern: POSIX ERE, case-insensitive, unanchored."""
    py = pattern
    for posix, cls in _POSIX_CLASSES.items():
        py = py.replace(posix, cls)
    try:
        return re.compile(py, re.IGNORECASE)
    except re.error as exc:
        raise ValueError("invalid gap_check_pattern %r: %s" % (pattern, exc)) from None


# ---------------------------------------------------------------------------
# Stream index

@dataclass(eq=False)
class SegmentInfo:
    """One disk segment's entry of a stream (a ``<segment>`` of buffer.xml):
    the stream's state after its last record in that segment."""
    end_time_us: int
    end_recno: int
    end_position: int
    gaps: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def end_seq(self):
        return self.end_position & SEQ_MASK


@dataclass(eq=False)
class StreamInfo:
    """One (location, seedname, type) of the stream index, with SeisComP's
    semantics.  ``end_*`` are the values of the current (newest) segment;
    ``gaps`` lists every segment's gaps in order; ``segments`` gives the
    per-segment entries (oldest first, the last one is the current)."""
    location: str
    seedname: str
    type: str
    gap_check: bool = False
    gap_treshold: int = 0
    begin_time_us: int = 0
    end_time_us: int = 0
    begin_recno: int = 0
    end_recno: int = 0
    begin_position: int = -1
    end_position: int = -1
    current_gaps: List[Tuple[int, int]] = field(default_factory=list)
    closed_segments: deque = field(default_factory=deque)

    @property
    def begin_seq(self):
        return self.begin_position & SEQ_MASK

    @property
    def end_seq(self):
        return self.end_position & SEQ_MASK

    @property
    def gaps(self):
        out = []
        for seg in self.closed_segments:
            out.extend(seg.gaps)
        out.extend(self.current_gaps)
        return out

    @property
    def segments(self):
        return list(self.closed_segments) + [
            SegmentInfo(self.end_time_us, self.end_recno, self.end_position,
                        list(self.current_gaps))]

    @property
    def segment_count(self):
        return len(self.closed_segments) + 1

    @property
    def sort_key(self):
        return (self.location, self.seedname, _TYPE_ORDER.get(self.type, 99))

    # -- SeisComP's StreamMonitor ------------------------------------------------------

    def new_segment(self):
        self.closed_segments.append(SegmentInfo(self.end_time_us, self.end_recno,
                                                self.end_position, self.current_gaps))
        self.current_gaps = []

    def delete_oldest_segment(self, station_segment_count):
        """The oldest disk segment is gone.  A stream younger than that
        segment has fewer entries and is left alone."""
        if station_segment_count > self.segment_count:
            return
        if self.closed_segments:
            front = self.closed_segments.popleft()
        else:          # cannot happen with >= 2 segments; keep SeisComP's effect
            front = SegmentInfo(self.end_time_us, self.end_recno, self.end_position,
                                self.current_gaps)
            self.current_gaps = []
        self.begin_time_us = front.end_time_us
        self.begin_recno = front.end_recno
        self.begin_position = front.end_position

    def empty(self):
        return self.begin_position == self.end_position

    def time_to_position(self, t_us):
        """End of the last segment that ends at or before t (else the first
        record): where data at/after t can start."""
        ret = self.begin_position
        for seg in self.closed_segments:
            if seg.end_time_us > t_us:
                return ret
            ret = seg.end_position
        if self.end_time_us > t_us:
            return ret
        return self.end_position

    def time_cmp(self, t_us):
        if t_us < self.begin_time_us:
            return -1
        if t_us > self.end_time_us:
            return 1
        return 0


def _streams_time_cmp(streams, t_us):
    # -1 / 1 when t is before / after every stream, else 0
    ret = 0
    for s in streams:
        d = s.time_cmp(t_us)
        if ret == 0:
            ret = d
        if d == 0 or d != ret:
            return 0
    return ret


# ---------------------------------------------------------------------------

class StationBuffer:
    """The record store of one station.

    Positions are 64-bit running record counts (SeisComP's segment naming);
    they only grow and are never reused, also across restarts.  The
    SeedLink sequence number is ``position % 2**24``.  The newest
    ``max(buffers, min_ring)`` records are also kept in memory; older ones
    are read from the segment files (one ``pread`` per run).

    After a crash no blank records are appended (SeisComP appends
    ``blanks`` of them): records reach the disk before any client sees
    them, so numbering simply continues after the last complete record.
    """

    def __init__(self, config, filebase, *, min_ring=0, sync_writes=False):
        self.config = config
        self.key = config.key
        self.name = config.name
        self.network = config.network
        self.description = config.description
        self.station_dir = os.path.join(filebase, config.key)
        self.segments_dir = os.path.join(self.station_dir, "segments")
        self.buffer_xml = os.path.join(self.station_dir, "buffer.xml")
        self.segsize = max(1, int(config.segsize))
        self.max_segments = max(1, int(config.segments))
        self.ring_size = max(1, int(config.buffers), int(min_ring))
        self.sync_writes = sync_writes
        self.stream_check = bool(config.stream_check)
        self._gap_rx = None
        self.gap_treshold = 0
        if self.stream_check and config.gap_check_pattern:
            self.gap_treshold = int(config.gap_treshold)
            if self.gap_treshold != 0:
                self._gap_rx = _compile_gap_pattern(config.gap_check_pattern)
        self._reset_state()

    def _reset_state(self):
        self._opened = False
        self.next_position = 0
        self._seg_starts = []         # first position of each segment file, oldest first
        self._seg_counts = []         # records per segment (the last entry is unused)
        self._wfd = None              # descriptor of the newest segment
        self._readers = {}            # segment start -> read descriptor
        self._ring = [None] * self.ring_size
        self._ring_base = 0           # ring holds positions >= max(_ring_base, next - size)
        self._streams = {}            # (raw loc+chan bytes, type) -> StreamInfo
        self._unindexed = []          # (position, records) stored but not indexed yet
        self._segment_count = 1       # SeisComP's station segment_count
        self._day_cache = {}

    # -- public properties -------------------------------------------------------------

    @property
    def oldest_position(self):
        """Oldest position still readable (memory ring or disk)."""
        lo = self._ring_low()
        starts = self._seg_starts
        last = len(starts) - 1
        for i, start in enumerate(starts):
            if i == last and self._wfd is not None:
                count = self.next_position - start
            else:
                count = self._seg_counts[i]
            if count:
                return start if start < lo else lo
        return lo

    @property
    def begin_position(self):
        """SeisComP's station begin: the first position of the oldest segment
        file (``next_position`` when there is none).  INFO ``begin_seq``."""
        return self._seg_starts[0] if self._seg_starts else self.next_position

    @property
    def begin_seq(self):
        return self.begin_position & SEQ_MASK

    @property
    def end_seq(self):
        return self.next_position & SEQ_MASK

    @property
    def segment_count(self):
        """buffer.xml ``segment_count``: segment files (min. 1) with
        stream_check, else 1 (SeisComP only counts with stream_check)."""
        return self._segment_count

    @property
    def segment_names(self):
        return ["%016X" % s for s in self._seg_starts]

    @property
    def streams(self):
        """Stream index sorted as INFO lists it (empty without stream_check)."""
        if not self.stream_check:
            return []
        self.index_pending()
        return sorted(self._streams.values(), key=lambda s: s.sort_key)

    def seq_of(self, position):
        return position & SEQ_MASK

    # -- open / recovery ---------------------------------------------------------------

    def open(self):
        """Create the directories, read the segments, restore or rebuild the
        stream index.  Raises OSError/ValueError naming the path if the
        buffer directory is unusable."""
        if self._opened:
            return
        self._reset_state()
        for d in (os.path.dirname(self.station_dir) or ".", self.station_dir,
                  self.segments_dir):
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                if not os.path.isdir(d):
                    raise OSError(exc.errno, "cannot create directory: %s" % exc.strerror, d) \
                        from None
        for d in (self.station_dir, self.segments_dir):      # writability, as SeisComP
            test = os.path.join(d, "test")
            try:
                fd = os.open(test, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                os.close(fd)
                os.unlink(test)
            except OSError as exc:
                raise OSError(exc.errno, "cannot create file: %s" % exc.strerror, test) \
                    from None
        self._scan_segments()
        self._restore_index()
        self._load_ring()
        self._opened = True
        log.info("%s: %d records in %d segment files, next sequence %06X",
                 self.key, sum(self._seg_counts_view()), len(self._seg_starts),
                 self.next_position & SEQ_MASK)

    def _scan_segments(self):
        try:
            names = os.listdir(self.segments_dir)
        except OSError as exc:
            raise OSError(exc.errno, "cannot open directory: %s" % exc.strerror,
                          self.segments_dir) from None
        found = []
        for name in names:
            if not _SEGMENT_NAME.match(name):
                continue
            path = os.path.join(self.segments_dir, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                raise OSError(exc.errno, "cannot stat file: %s" % exc.strerror, path) from None
            if not os.path.isfile(path):
                continue
            found.append((int(name, 16), name, st.st_size))
        found.sort()
        seen = set()
        for start, name, size in found:
            path = os.path.join(self.segments_dir, name)
            if start in seen:
                raise ValueError("%s: duplicate segment name (same number as another file)"
                                 % path)
            seen.add(start)
            if size % RECORD_SIZE:
                keep = size - size % RECORD_SIZE
                log.warning("%s: dropping a torn record (%d trailing bytes) left by a crash",
                            path, size - keep)
                try:
                    os.truncate(path, keep)
                except OSError as exc:
                    raise OSError(exc.errno, "cannot truncate torn segment: %s"
                                  % exc.strerror, path) from None
                size = keep
            self._seg_starts.append(start)
            self._seg_counts.append(size // RECORD_SIZE)
        # more files than configured (operator lowered `segments`): drop the oldest
        while len(self._seg_starts) > self.max_segments:
            self._unlink_segment(0)
        if self._seg_starts:
            self.next_position = self._seg_starts[-1] + self._seg_counts[-1]
            path = self._segment_path(self._seg_starts[-1])
            try:
                self._wfd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except OSError as exc:
                raise OSError(exc.errno, "cannot open file: %s" % exc.strerror, path) from None
        self._ring_base = self.next_position
        self._segment_count = max(1, len(self._seg_starts)) if self.stream_check else 1

    def _restore_index(self):
        have_xml = os.path.exists(self.buffer_xml)
        restored = False
        if have_xml:
            if self.stream_check:
                try:
                    restored = self._read_buffer_xml()
                except (ValueError, ET.ParseError, OSError) as exc:
                    log.error("%s: %s; rebuilding the stream index from the records",
                              self.buffer_xml, exc)
                    self._streams = {}
            try:
                os.unlink(self.buffer_xml)
            except OSError as exc:
                raise OSError(exc.errno, "cannot delete file: %s" % exc.strerror,
                              self.buffer_xml) from None
        elif self.next_position:
            log.info("%s: no %s (unclean shutdown); continuing at %06X without blank "
                     "records", self.key, self.buffer_xml, self.next_position & SEQ_MASK)
        if self.stream_check and not restored and self._seg_starts:
            self._rebuild_index()

    def _read_buffer_xml(self):
        """Restore the stream index; False if it does not fit the disk."""
        root = ET.parse(self.buffer_xml).getroot()
        if root.tag != "buffer":
            raise ValueError("root element is not <buffer>")
        if root.get("stream_check", "enabled") != "enabled":
            log.info("%s: saved without stream_check; rebuilding the index", self.buffer_xml)
            return False
        nxt = self.next_position
        end_seq = _parse_seq(root.get("end_seq", "%06X" % (nxt & SEQ_MASK)))
        if end_seq != nxt & SEQ_MASK:
            log.warning("%s: end_seq %06X does not match the segments (%06X); rebuilding "
                        "the index", self.buffer_xml, end_seq, nxt & SEQ_MASK)
            return False
        saved_count = int(root.get("segment_count", "1"))
        nfiles = max(1, len(self._seg_starts))
        if saved_count < nfiles:
            log.warning("%s: %d segments saved, %d on disk; rebuilding the index",
                        self.buffer_xml, saved_count, nfiles)
            return False

        def pos(seq):
            return nxt - ((nxt - seq) & SEQ_MASK)

        streams = {}
        for el in root.findall("stream"):
            loc = el.get("location", "")
            cha = el.get("seedname", "")
            typ = el.get("type", "")
            if len(loc) > 2 or not cha or len(cha) > 3:
                raise ValueError("invalid stream %r %r" % (loc, cha))
            typ = typ.upper()
            if len(typ) != 1 or typ not in _TYPE_ORDER:
                raise ValueError("invalid stream type %r" % el.get("type"))
            gc = el.get("gap_check", "disabled")
            if gc not in ("enabled", "disabled"):
                raise ValueError("invalid gap_check %r" % gc)
            thr = int(el.get("gap_treshold", "0"))
            if "gap_treshold" not in el.attrib:
                raise ValueError("gap_treshold unspecified")
            thr = max(thr, 100)              # SeisComP clamps (a saved 0 becomes 100)
            s = StreamInfo(loc, cha, typ, gc == "enabled", thr)
            s.begin_time_us = parse_time(el.attrib["begin_time"])
            s.end_time_us = parse_time(el.attrib["end_time"])
            s.begin_recno = _parse_recno(el.attrib["begin_recno"])
            s.end_recno = _parse_recno(el.attrib["end_recno"])
            s.begin_position = pos(_parse_seq(el.attrib["begin_seq"]))
            s.end_position = pos(_parse_seq(el.attrib["end_seq"]))
            segs = el.findall("segment")
            # SeisComP: every <segment> but the last gives a closed segment; the
            # last one's values come from the <stream> attributes
            for i, sel in enumerate(segs):
                gaps = [(parse_time(g.attrib["begin_time"]), parse_time(g.attrib["end_time"]))
                        for g in sel.findall("gap")]
                t = parse_time(sel.attrib["end_time"])
                r = _parse_recno(sel.attrib["end_recno"])
                p = pos(_parse_seq(sel.attrib["end_seq"]))
                if i < len(segs) - 1:
                    s.closed_segments.append(SegmentInfo(t, r, p, gaps))
                else:
                    s.current_gaps = gaps
            key = ((loc.ljust(2) + cha.ljust(3)).encode("latin-1"), typ)
            if key in streams:
                raise ValueError("multiple definitions of stream %s %s %s" % (loc, cha, typ))
            streams[key] = s
        self._streams = streams
        # files deleted since the save (fewer segments configured): drop their entries
        count = saved_count
        while count > nfiles:
            self._index_delete_oldest(count)
            count -= 1
        self._segment_count = nfiles
        return True

    def _rebuild_index(self):
        """Crash recovery: index every record header on disk, as SeisComP's
        do_load_headers (a new index segment per file)."""
        self._streams = {}
        self._segment_count = 1
        last = len(self._seg_starts) - 1
        for i, (start, count) in enumerate(zip(self._seg_starts, self._seg_counts_view())):
            done = 0
            while done < count:
                n = min(_REBUILD_CHUNK, count - done)
                data = self._pread(start, done, n)
                for k in range(0, len(data) - RECORD_SIZE + 1, RECORD_SIZE):
                    if data[k]:                     # blank records are not indexed
                        self._index_safely(data[k:k + RECORD_SIZE],
                                           start + done + k // RECORD_SIZE)
                done += n
            if i != last:
                self._index_new_segment()

    def _load_ring(self):
        """Load the newest records (up to the ring size) into memory; only
        the newest contiguous run counts."""
        nxt = self.next_position
        pos = max(nxt - self.ring_size, 0)
        base, recs = None, []
        while pos < nxt:
            run = self._read_disk(pos, nxt - pos)
            if not run:                     # a hole in the numbering
                base, recs = None, []
                pos += 1
                continue
            if base is None:
                base = pos
            recs.extend(run)
            pos += len(run)
        size = self.ring_size
        ring = self._ring
        for i, rec in enumerate(recs):
            ring[(base + i) % size] = rec
        self._ring_base = base if recs else nxt

    # -- writing -----------------------------------------------------------------------

    def append(self, record):
        """Store one 512-byte record; returns its position."""
        if type(record) is not bytes:
            record = bytes(record)
        if len(record) != RECORD_SIZE:
            raise ValueError("record is %d bytes, not %d" % (len(record), RECORD_SIZE))
        if self._wfd is None or self.next_position - self._seg_starts[-1] >= self.segsize:
            self._rotate()
        pos = self.next_position
        self._write(record)
        self._ring[pos % self.ring_size] = record
        if self.stream_check and record[0]:
            self.index_pending()
            self._index(record, pos)
        self.next_position = pos + 1
        return pos

    def append_many(self, records, defer_index=False):
        """Store records in order (one write() per segment touched); returns
        the position of the first.  With defer_index the stream index is
        brought up to date by index_pending() (or the next reader of the
        index), so that a caller can hand the records to clients first."""
        if not isinstance(records, list):
            records = list(records)
        first = self.next_position
        n = len(records)
        i = 0
        size = self.ring_size
        ring = self._ring
        while i < n:
            if self._wfd is None or self.next_position - self._seg_starts[-1] >= self.segsize:
                self._rotate()
            room = self.segsize - (self.next_position - self._seg_starts[-1])
            chunk = records[i:i + room]
            for k, r in enumerate(chunk):
                if type(r) is not bytes:
                    chunk[k] = r = bytes(r)
                if len(r) != RECORD_SIZE:
                    raise ValueError("record is %d bytes, not %d" % (len(r), RECORD_SIZE))
            self._write(b"".join(chunk))
            pos = self.next_position
            for r in chunk:
                ring[pos % size] = r
                pos += 1
            # the records are on disk: number them before anything can fail
            self.next_position = pos
            if self.stream_check:
                self._unindexed.append((pos - len(chunk), chunk))
                if not defer_index:
                    self.index_pending()
            i += len(chunk)
        return first

    def index_pending(self):
        """Add the records stored with defer_index to the stream index."""
        pending, self._unindexed = self._unindexed, []
        for pos, chunk in pending:
            for k, r in enumerate(chunk):
                if r[0]:
                    self._index_safely(r, pos + k)

    def _index_safely(self, rec, pos):
        # a malformed record must not stop the buffer: it stays stored,
        # only its index entry is missing
        try:
            self._index(rec, pos)
        except (struct.error, ValueError, IndexError) as exc:
            log.warning("%s: record %d not indexed (%s)", self.key, pos, exc)

    def _write(self, data):
        fd = self._wfd
        try:
            written = os.write(fd, data)
            while written < len(data):
                written += os.write(fd, memoryview(data)[written:])
            if self.sync_writes:
                os.fdatasync(fd)
        except OSError as exc:
            # keep the file on a record boundary so positions stay consistent
            path = self._segment_path(self._seg_starts[-1])
            try:
                os.ftruncate(fd, (self.next_position - self._seg_starts[-1]) * RECORD_SIZE)
            except OSError:
                pass
            raise OSError(exc.errno, "cannot write file: %s" % exc.strerror, path) from None

    def _rotate(self):
        """Start a new segment file at next_position (SeisComP's order: close
        the full file, create the new one, delete the oldest beyond
        `segments`, then open a new index segment)."""
        self.index_pending()            # the closing segment's records are indexed in it
        first_file = self._wfd is None and not self._seg_starts
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
            self._seg_counts[-1] = self.next_position - self._seg_starts[-1]
        start = self.next_position
        path = self._segment_path(start)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, "cannot create file: %s" % exc.strerror, path) from None
        self._seg_starts.append(start)
        self._seg_counts.append(0)
        self._wfd = fd
        while len(self._seg_starts) > self.max_segments:
            if self.stream_check:
                self._index_delete_oldest(self._segment_count)
                self._segment_count -= 1
            self._unlink_segment(0)
        if not first_file and self.stream_check:
            self._index_new_segment()

    def _unlink_segment(self, i):
        start = self._seg_starts.pop(i)
        self._seg_counts.pop(i)
        fd = self._readers.pop(start, None)
        if fd is not None:
            os.close(fd)
        path = self._segment_path(start)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OSError(exc.errno, "cannot delete file: %s" % exc.strerror, path) from None

    def _segment_path(self, start):
        return os.path.join(self.segments_dir, "%016X" % start)

    # -- stream index ------------------------------------------------------------------

    def _index_new_segment(self):
        for s in self._streams.values():
            s.new_segment()
        self._segment_count += 1

    def _index_delete_oldest(self, station_count):
        dead = []
        for key, s in self._streams.items():
            s.delete_oldest_segment(station_count)
            if s.empty():
                dead.append(key)
        for key in dead:
            del self._streams[key]

    def _new_stream(self, key):
        lc, typ = key
        loc = lc[:2].decode("latin-1").rstrip(" ")
        cha = lc[2:].decode("latin-1").rstrip(" ")
        rx = self._gap_rx
        gap_check = (typ == "D" and rx is not None
                     and rx.search((loc + cha).split("\0", 1)[0]) is not None)
        s = StreamInfo(loc, cha, typ, gap_check, self.gap_treshold)
        self._streams[key] = s
        return s

    def _day_us(self, year, doy):
        return (year_start_days(year) + doy - 1) * _DAY_US

    def _index(self, rec, pos):
        """SeisComP's StationMonitor::add_packet for one record; the caller
        skips blank records (first byte NUL)."""
        (recno_b, lc, year, doy, hour, minute, sec, fract, nsamp, rf, rm,
         boff) = _HDR(rec)
        # record type; fast path for the usual blockette 1000/1001 chain
        typ = None
        if boff == 48:
            bt, nx = _BLK(rec, 48)
            if bt == 1000 or bt == 1001:
                if nx == 0:
                    typ = "D"
                elif 48 < nx <= RECORD_SIZE - 4:
                    bt, nx = _BLK(rec, nx)
                    if (bt == 1000 or bt == 1001) and nx == 0:
                        typ = "D"
        if typ is None:
            typ = record_type(rec)
            if typ is None:
                log.debug("%s: could not determine packet type (position %d)", self.key, pos)
                return
        elif rf == 0 and nsamp:
            typ = "L"
        key = (lc, typ)
        s = self._streams.get(key)
        if s is None:
            s = self._new_stream(key)
        dk = (year << 16) | doy
        day = self._day_cache.get(dk)
        if day is None:
            day = self._day_cache[dk] = self._day_us(year, doy)
        usec = fract * 100
        start = day + ((hour * 60 + minute) * 60 + sec) * _US + usec
        if recno_b.isdigit():
            recno = int(recno_b)
        else:
            recno = _scan_recno(recno_b)
        rate_defined = rf != 0 and rm != 0
        if s.begin_position < 0:
            s.begin_time_us = start
            s.begin_recno = recno
            s.begin_position = pos
        elif rate_defined and s.gap_check and typ == "D":
            td = s.end_time_us - start
            thr = s.gap_treshold
            if td < -thr or td > thr:
                s.current_gaps.append((s.end_time_us, start))
        if rate_defined:
            # add_dtime(start, 1000000 * samples / rate), C int and double arithmetic
            v = 1000000 * nsamp
            if v > 0x7FFFFFFF:
                v = (v + 0x80000000) % 0x100000000 - 0x80000000
            if rf > 0 and rm > 0:
                d = v / float(rf * rm)
            else:
                d = v / sample_rate_from_factors(rf, rm)
            secs = math.floor((usec + d) / 1000000.0)
            s.end_time_us = start - usec + secs * _US + int(d + (usec - secs * 1000000.0))
        else:
            s.end_time_us = start
        recno += 1
        s.end_recno = recno % 1000000 if recno >= 0 else _c_mod(recno, 1000000)
        s.end_position = pos + 1

    # -- reading -----------------------------------------------------------------------

    def _ring_low(self):
        lo = self.next_position - self.ring_size
        return lo if lo > self._ring_base else self._ring_base

    def _seg_counts_view(self):
        counts = list(self._seg_counts)
        if counts:
            counts[-1] = self.next_position - self._seg_starts[-1] if self._wfd is not None \
                else counts[-1]
        return counts

    def _segment_of(self, pos):
        """(start, count) of the segment file holding pos, or None."""
        i = bisect_right(self._seg_starts, pos) - 1
        if i < 0:
            return None
        start = self._seg_starts[i]
        if i == len(self._seg_starts) - 1 and self._wfd is not None:
            count = self.next_position - start
        else:
            count = self._seg_counts[i]
        if pos - start >= count:
            return None
        return start, count

    def _reader(self, start):
        fd = self._readers.get(start)
        if fd is None:
            if len(self._readers) >= _MAX_OPEN_READERS:
                old = next(iter(self._readers))
                os.close(self._readers.pop(old))
            path = self._segment_path(start)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise OSError(exc.errno, "cannot open file: %s" % exc.strerror, path) from None
            self._readers[start] = fd
        return fd

    def _pread(self, start, index, count):
        fd = self._reader(start)
        want = count * RECORD_SIZE
        data = os.pread(fd, want, index * RECORD_SIZE)
        while len(data) < want:
            more = os.pread(fd, want - len(data), index * RECORD_SIZE + len(data))
            if not more:
                break
            data += more
        return data

    def _read_disk(self, pos, max_count):
        seg = self._segment_of(pos)
        if seg is None:
            return []
        start, count = seg
        n = min(max_count, count - (pos - start))
        data = self._pread(start, pos - start, n)
        return [data[i:i + RECORD_SIZE] for i in range(0, len(data) - RECORD_SIZE + 1,
                                                          RECORD_SIZE)]

    def read(self, position):
        """The record at position (memory, else one pread), None if gone."""
        if position >= self.next_position or position < 0:
            return None
        if position >= self._ring_low():
            return self._ring[position % self.ring_size]
        recs = self._read_disk(position, 1)
        return recs[0] if recs else None

    def read_range(self, position, max_count):
        """Up to max_count consecutive records starting exactly at position
        (disk runs with one pread each, then memory).  Shorter (possibly
        empty) when position is gone or a run ends at a hole in the segment
        numbering (see resume_position)."""
        out = []
        nxt = self.next_position
        if max_count <= 0 or position < 0 or position >= nxt:
            return out
        lo = self._ring_low()
        while position < lo and len(out) < max_count:
            run = self._read_disk(position, min(max_count - len(out), lo - position))
            if not run:
                return out
            out.extend(run)
            position += len(run)
        k = min(max_count - len(out), nxt - position)
        if k > 0:
            size = self.ring_size
            i0 = position % size
            if i0 + k <= size:
                out.extend(self._ring[i0:i0 + k])
            else:
                out.extend(self._ring[i0:])
                out.extend(self._ring[:k - (size - i0)])
        return out

    def readable(self, position):
        if position >= self.next_position or position < 0:
            return False
        return position >= self._ring_low() or self._segment_of(position) is not None

    def resume_position(self, position):
        """The first readable position >= position (next_position if none):
        where a reader continues after its records were deleted or at a
        hole in the segment numbering (SeisComP jumps to the next segment)."""
        if position < 0:
            position = 0
        if self.readable(position):
            return position
        lo = self._ring_low()
        best = lo if lo > position else None
        for start, count in zip(self._seg_starts, self._seg_counts_view()):
            if count and start + count > position:
                p = max(start, position)
                if best is None or p < best:
                    best = p
                break
        if best is None or best > self.next_position:
            return self.next_position
        return best

    def position_of_seq(self, seq):
        """The position holding 24-bit sequence number seq, if still stored
        (memory first, then the oldest match on disk, as SeisComP)."""
        seq &= SEQ_MASK
        nxt = self.next_position
        d = (nxt - seq) & SEQ_MASK or SEQ_MOD
        p = nxt - d
        if p < 0:
            return None
        if p >= self._ring_low():
            return p
        oldest = self.oldest_position
        if p < oldest:
            return None
        first = p - ((p - oldest) // SEQ_MOD) * SEQ_MOD
        while first <= p:
            if self._segment_of(first) is not None:
                return first
            first += SEQ_MOD
        return None

    # -- time windows (docs §2.7) ------------------------------------------------------

    def _matching(self, stream_filter):
        if not self.stream_check:
            return []
        self.index_pending()
        if stream_filter is None:
            return list(self._streams.values())
        return [s for s in self._streams.values()
                if stream_filter(s.location, s.seedname, s.type)]

    def time_cmp(self, t_us, stream_filter=None):
        """SeisComP's station time_cmp: -1 if t is before every matching
        stream, 1 if after every one, else 0 (also with no matching stream)."""
        return _streams_time_cmp(self._matching(stream_filter), t_us)

    def position_for_time(self, begin_us, stream_filter=None):
        """Where a time window starting at begin_us starts: for each matching
        indexed stream the end of its last segment ending at/before begin_us
        (segment granularity), the earliest of them counted from the
        station's first segment; next_position when no stream matches (or
        stream_check is off); None when begin_us is after the end of every
        matching stream (SeisComP sets no start: new records only)."""
        streams = self._matching(stream_filter)
        if _streams_time_cmp(streams, begin_us) > 0:
            return None
        nxt = self.next_position
        if not streams:
            return nxt
        begin = self.begin_position
        best = begin
        distance = nxt - begin
        for s in streams:
            d = s.time_to_position(begin_us) - begin
            if 0 <= d < distance:
                distance = d
                best = begin + d
        return best

    def time_to_seq(self, begin_us, seqstart=-1, stream_filter=None):
        """SeisComP's set_begin_time arithmetic in 24-bit sequence numbers:
        -1 if begin_us is after every matching stream, else the start
        sequence; with seqstart >= 0 the later of the two (DATA n time)."""
        p = self.position_for_time(begin_us, stream_filter)
        if p is None:
            return -1
        seq = p & SEQ_MASK
        end = self.next_position & SEQ_MASK
        if seqstart >= 0 and ((end - seqstart) & SEQ_MASK) < ((end - seq) & SEQ_MASK):
            return seqstart
        return seq

    # -- shutdown ----------------------------------------------------------------------

    def buffer_xml_text(self):
        """buffer.xml as SeisComP writes it (libxml2, indented)."""
        head = '<buffer begin_seq="%06X" end_seq="%06X" segment_count="%d" stream_check="%s"' % (
            self.begin_position & SEQ_MASK, self.next_position & SEQ_MASK,
            self._segment_count, "enabled" if self.stream_check else "disabled")
        streams = self.streams
        if not streams:
            return '<?xml version="1.0"?>\n' + head + "/>\n"
        out = ['<?xml version="1.0"?>\n', head, ">\n"]
        for s in streams:
            out.append(
                '  <stream location="%s" seedname="%s" type="%s" begin_time="%s" end_time="%s" '
                'begin_recno="%06d" end_recno="%06d" begin_seq="%06X" end_seq="%06X" '
                'gap_check="%s" gap_treshold="%d">\n' % (
                    _xml_attr(s.location), _xml_attr(s.seedname), s.type,
                    format_time(s.begin_time_us), format_time(s.end_time_us),
                    s.begin_recno, s.end_recno, s.begin_seq, s.end_seq,
                    "enabled" if s.gap_check else "disabled", s.gap_treshold))
            for seg in s.segments:
                attrs = 'end_time="%s" end_recno="%06d" end_seq="%06X"' % (
                    format_time(seg.end_time_us), seg.end_recno, seg.end_seq)
                if not seg.gaps:
                    out.append("    <segment %s/>\n" % attrs)
                    continue
                out.append("    <segment %s>\n" % attrs)
                for b, e in seg.gaps:
                    out.append('      <gap begin_time="%s" end_time="%s"/>\n'
                               % (format_time(b), format_time(e)))
                out.append("    </segment>\n")
            out.append("  </stream>\n")
        out.append("</buffer>\n")
        return "".join(out)

    def close(self):
        """Clean shutdown: close the files and write buffer.xml."""
        if not self._opened:
            return
        self._opened = False
        try:
            if self._wfd is not None:
                if self.sync_writes:
                    os.fsync(self._wfd)
                os.close(self._wfd)
                self._seg_counts[-1] = self.next_position - self._seg_starts[-1]
                self._wfd = None
            for fd in self._readers.values():
                os.close(fd)
            self._readers = {}
            text = self.buffer_xml_text()
            tmp = self.buffer_xml + ".tmp"
            log.info("%s: saving disk buffer description to '%s'", self.key, self.buffer_xml)
            try:
                with open(tmp, "w", encoding="ascii", newline="\n") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.buffer_xml)
            except OSError as exc:
                raise OSError(exc.errno or errno.EIO, "cannot write file: %s" % exc.strerror,
                              self.buffer_xml) from None
        finally:
            self._ring = [None] * self.ring_size

    def __repr__(self):
        return "<StationBuffer %s next=%06X segments=%d>" % (
            self.key, self.next_position & SEQ_MASK, len(self._seg_starts))


def _parse_seq(text):
    n = int(text, 16)
    if n & ~SEQ_MASK or n < 0:
        raise ValueError("bad sequence number %r" % text)
    return n


def _parse_recno(text):
    n = int(text)
    if not 0 <= n <= 999999:
        raise ValueError("bad record number %r" % text)
    return n

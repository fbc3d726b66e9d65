"""Records of a stream, window coverage, gaps and trimming.

The rules (shared by the polling and the streaming client):

* A window is ``[pick - before, pick + after]``.
* Records are kept whole ("cut by record"): a record belongs to a window
  when its first sample is at or before the window end and its last sample
  at or after the window start.  Records are identified by (stream, start
  time): the same record fetched twice, from two sources or twice from one,
  is kept once.
* With ``dt`` the sample interval and ``tol`` the tolerance in samples
  (default 1.5): consecutive records leave a *gap* when the first sample of
  the next lies more than ``tol * dt`` after the last sample of the
  previous.  The window start is covered when the first sample lies at most
  ``(tol - 0.5) * dt`` after it (the sample grid need not align with the
  window), the end when the last sample lies at most that much before it.
* A component is complete when its records cover the window with no gap; a
  window is complete when every component is.

>>> s = RecordSet("XX.TEST..BHZ")
>>> for start in (0, 10, 25):    # 10 samples at 1 Hz each: a gap 20..25
...     _ = s.add(Rec("XX.TEST..BHZ", start * NS, (start + 9) * NS, 1.0, 10, b""))
>>> cov = assess(s.overlapping(0, 30 * NS), 0, 30 * NS, 1.5)
>>> cov.complete, [(a // NS, b // NS) for a, b in cov.gaps]
(False, [(19, 25)])
"""
import bisect
import collections
import logging

import numpy as np

from ..errors import RecordError
from ..mseed import unpack
from .model import NS

__all__ = ["Rec", "RecordSet", "Coverage", "assess", "split_records", "trim",
           "missing_intervals"]

log = logging.getLogger("seedlink_fast.picks")


class Rec(collections.namedtuple("Rec", "stream start_ns end_ns rate nsamples raw")):
    """One data record: stream id, first and last sample time (ns), rate
    (Hz), sample count and the raw bytes."""

    __slots__ = ()

    @property
    def dt_ns(self):
        return NS / self.rate


def _from_record(rec, data):
    rate = rec.sample_rate
    if not rate or rec.num_samples <= 0:
        return None         # log, timing, blank records: not waveform data
    raw = bytes(data[rec.offset:rec.offset + rec.record_length])
    return Rec(rec.id, rec.starttime_ns, rec.endtime_ns, float(rate), rec.num_samples, raw)


def split_records(data, record_length=512):
    """The data records (``Rec``) in a byte string of miniSEED 2 records.

    Records without samples (log, timing) are left out.  Every record is
    decoded once as a check: a corrupt record is logged and skipped; the
    records around it are kept.
    """
    if not data:
        return []
    try:
        parsed = unpack(data, record_length=record_length)
    except RecordError as exc:
        if len(data) <= record_length:
            log.warning("skipping a corrupt record: %s", exc)
            return []
        # check one record at a time: boundaries from the headers if they
        # parse, else fixed-length steps
        try:
            spans = [(r.offset, r.record_length)
                     for r in unpack(data, decode=False, record_length=record_length)]
        except RecordError:
            spans = [(off, record_length)
                     for off in range(0, len(data) - record_length + 1, record_length)]
        out = []
        for offset, length in spans:
            out.extend(split_records(data[offset:offset + length], length))
        return out
    out = []
    for rec in parsed:
        item = _from_record(rec, data)
        if item is not None:
            out.append(item)
    return out


class RecordSet:
    """The records of one stream, unique by start time, in time order."""

    def __init__(self, stream):
        self.stream = stream
        self._starts = []       # sorted start times
        self._recs = {}         # start_ns -> Rec
        self.nbytes = 0
        self.latest_end = None  # last sample time of the newest record

    def __len__(self):
        return len(self._starts)

    def add(self, rec):
        """Keep `rec` unless a record with its start time is already here;
        returns whether it was new."""
        start = rec.start_ns
        if start in self._recs:
            return False
        self._recs[start] = rec
        if not self._starts or start > self._starts[-1]:
            self._starts.append(start)
        else:
            bisect.insort(self._starts, start)
        self.nbytes += len(rec.raw)
        if self.latest_end is None or rec.end_ns > self.latest_end:
            self.latest_end = rec.end_ns
        return True

    def extend(self, recs):
        return sum(self.add(r) for r in recs)

    @property
    def earliest_start(self):
        return self._starts[0] if self._starts else None

    def records(self):
        return [self._recs[s] for s in self._starts]

    def overlapping(self, t0, t1):
        """Records with a sample in [t0, t1] (by first/last sample time)."""
        starts = self._starts
        hi = bisect.bisect_right(starts, t1)
        # step back over the records that start before t0 but reach it
        lo = bisect.bisect_left(starts, t0)
        while lo > 0 and self._recs[starts[lo - 1]].end_ns >= t0:
            lo -= 1
        return [self._recs[s] for s in starts[lo:hi] if self._recs[s].end_ns >= t0]

    def drop_before(self, t):
        """Forget records whose last sample is before `t` (in start order,
        stopping at the first one that reaches t); returns bytes freed."""
        freed = n = 0
        for start in self._starts:
            rec = self._recs[start]
            if rec.end_ns >= t:
                break
            freed += len(rec.raw)
            del self._recs[start]
            n += 1
        del self._starts[:n]
        self.nbytes -= freed
        return freed

    def drop_oldest(self):
        """Forget the oldest record; returns bytes freed (0 when empty)."""
        if not self._starts:
            return 0
        rec = self._recs.pop(self._starts.pop(0))
        self.nbytes -= len(rec.raw)
        return len(rec.raw)


class Coverage(collections.namedtuple(
        "Coverage", "complete gaps first_ns last_ns rate nrecords")):
    """How well one component's records cover a window.

    ``gaps`` are (from, to) time pairs of missing data inside the window
    (``from`` = last sample before the hole or the window start, ``to`` =
    first sample after it or the window end); ``first_ns``/``last_ns`` the
    first and last sample time held (None without records).
    """

    __slots__ = ()

    @property
    def has_data(self):
        return self.nrecords > 0


def assess(records, ws, we, tolerance):
    """Coverage of the window [ws, we] by `records` (time-ordered, each
    overlapping the window)."""
    if not records:
        return Coverage(False, [(ws, we)], None, None, None, 0)
    gaps = []
    first = records[0]
    if first.start_ns - ws > (tolerance - 0.5) * first.dt_ns:
        gaps.append((ws, first.start_ns))
    end, dt = first.end_ns, first.dt_ns
    for rec in records[1:]:
        if rec.start_ns - end > tolerance * dt:
            gaps.append((end, rec.start_ns))
        if rec.end_ns > end:
            end, dt = rec.end_ns, rec.dt_ns
    if we - end > (tolerance - 0.5) * dt:
        gaps.append((end, we))
    return Coverage(not gaps, gaps, first.start_ns, end, first.rate, len(records))


def missing_intervals(coverage, ws, we):
    """The time spans still to fetch for a component: its gaps, each as
    [from, to] (whole window when it has nothing)."""
    return list(coverage.gaps) if coverage.has_data else [(ws, we)]


def trim(records, ws, we, tolerance):
    """Samples of `records` inside [ws, we] as a list of ``(start_ns,
    array)`` segments: overlapping samples (records from two sources,
    re-sent records) are taken once, and a new segment starts at every gap
    larger than `tolerance` samples."""
    if not records:
        return []
    try:
        decoded = unpack(b"".join(r.raw for r in records))
    except RecordError as exc:
        log.warning("%s: cannot decode: %s", records[0].stream, exc)
        return []
    segments = []
    pieces, seg_start, last_t = [], None, None
    for rec in decoded:
        values = rec.samples
        rate = rec.sample_rate
        if values is None or not rate or not len(values):
            continue
        dt = NS / rate
        times = rec.starttime_ns + np.round(np.arange(len(values)) * dt).astype(np.int64)
        keep = (times >= ws) & (times <= we)
        if last_t is not None:
            keep &= times > last_t + dt / 2
        index = np.flatnonzero(keep)
        if not len(index):
            continue
        t_first = int(times[index[0]])
        if last_t is not None and t_first - last_t > tolerance * dt:
            segments.append((seg_start, np.concatenate(pieces)))
            pieces, seg_start = [], None
        if seg_start is None:
            seg_start = t_first
        # a contiguous run: keep is true on a single index range
        pieces.append(values[index[0]:index[-1] + 1])
        last_t = int(times[index[-1]])
    if pieces:
        segments.append((seg_start, np.concatenate(pieces)))
    return segments

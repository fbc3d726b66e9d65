"""Backfilling (``backfill_buffer`` seconds, 0 = off), as SeisComP's seedlink
does it.

A station with ``backfill_buffer > 0`` holds back data that arrives after a
gap, hoping the gap gets filled by late packets, so that a plugin sending
packets slightly out of order still produces continuous streams.

Raw inputs (:class:`RawBackfill`, one per tree input; the PacketEngine hands
it the input's RawDataTime, RawData and Flush packets, RawDataGap packets
still go straight to the tree):

* the first time-stamped packet is released at once;
* a time-stamped packet starting at least one sample after the end of the
  last committed data is held in a list sorted by end time (equal end times
  keep their arrival order); it becomes the *current* packet, to which
  later RawData packets are appended (its end time grows, its place in the
  list does not change) and on which a Flush packet sets a flag;
* any other time-stamped packet ends the current packet; if it ends before
  the last commit it is committed at once ("out-of-order"), otherwise it is
  committed and becomes the last commit;
* after each change the list is trimmed: while the span from the first
  held packet's start to the last held packet's end is at least the
  capacity, the first packet is committed; then, held packets that start
  less than one sample after the last commit are committed in order;
* RawData packets without a current packet go to the tree directly and
  advance the last commit by their duration.

Committing a packet = setting the input's time to the packet's start (with
the usual time-gap policy), sending its samples, and flushing the tree when
a Flush packet was attached to it.

miniSEED input (:class:`MseedBackfill`, one per station, a buffer per
location+channel): the same with the record's start time and its end time
start + samples / rate; only data records take part, the others are stored
at once.  There is no "current" record.

At shutdown (:meth:`RawBackfill.commit_pending`,
:meth:`MseedBackfill.commit_pending`) the held packets are committed in
list order, gaps or not.

Time arithmetic is SeisComP's: times are (epoch seconds, usec), end times
are ``add_dtime(start, 1000000 * (n * freqd / freqn))`` in doubles, and the
one-sample test is ``tdiff(a, b) * 1e-6 * freqn >= freqd``.

One SeisComP behaviour is reproduced on purpose although it loses data:
when the current packet gets committed by the trimming (a real gap longer
than the capacity, with RawData packets continuing a held time-stamped
packet), it stays the current packet, so the RawData packets that follow are
appended to a packet that is no longer in the list and are dropped, until
the next time-stamped packet.
"""
import logging
import struct

import numpy as np

from ._ext.sproc import add_dtime, ptime_to_time
from .mseed import sample_rate_from_factors
from .records import record_type

log = logging.getLogger("seedlink_fast.backfill")

__all__ = ["RawBackfill", "MseedBackfill"]


def _tdiff(a, b):
    """SeisComP's tdiff: a - b in microseconds, as a double (exact here)."""
    return float((a[0] - b[0]) * 1000000 + (a[1] - b[1]))


def _insert(buffer, packet):
    """Insert before the first packet that ends strictly later."""
    etime = packet.etime
    for i, held in enumerate(buffer):
        if held.etime > etime:
            buffer.insert(i, packet)
            return
    buffer.append(packet)


# -- raw inputs -----------------------------------------------------------------

class _RawPacket:
    __slots__ = ("stime", "etime", "usec_correction", "timing_quality", "chunks",
                 "nsamples", "flush")

    def __init__(self, stime, etime, usec_correction, timing_quality, data):
        self.stime = stime
        self.etime = etime
        self.usec_correction = usec_correction
        self.timing_quality = timing_quality
        self.chunks = [data]
        self.nsamples = len(data) >> 2
        self.flush = False


class RawBackfill:
    """Backfilling of one raw input (a TreeInput of a backfilling station).

    ``raw_time``/``raw``/``flush`` take the place of the PacketEngine's
    direct handling of RawDataTime, RawData and Flush packets; samples come
    as the packet payload (native int32 bytes).
    """

    def __init__(self, tree, capacity, station=""):
        self.tree = tree
        self.capacity = float(capacity)
        self.station = station
        self.freqn, self.freqd = tree.rate
        self.buffer = []            # held _RawPacket, sorted by end time
        self.current = None         # the packet RawData packets append to
        self.last_commit = None     # (sec, usec) end of the last committed data
        self.committed = False

    def _end(self, stime, n):
        return add_dtime(stime[0], stime[1],
                         1000000 * (float(n) * float(self.freqd) / float(self.freqn)))

    def _gap_from_last_commit(self, stime):
        """Seconds from the last commit to stime, and whether that is a
        sample or more."""
        gap = _tdiff(stime, self.last_commit) * 1e-6
        return gap, gap * self.freqn >= self.freqd

    # -- packets --------------------------------------------------------------

    def raw_time(self, sec, usec, usec_correction, timing_quality, data):
        """A RawDataTime packet: samples starting at (sec, usec)."""
        stime = (sec, usec)
        if not self.committed:
            # the first packet is released at once
            self.last_commit = self._end(stime, len(data) >> 2)
            self.committed = True
            self._commit_data(stime, usec_correction, timing_quality, data)
            return
        gap, is_gap = self._gap_from_last_commit(stime)
        if is_gap:
            packet = _RawPacket(stime, self._end(stime, len(data) >> 2), usec_correction,
                                timing_quality, data)
            self.current = packet
            _insert(self.buffer, packet)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s channel %s data queued (currently %d pkts) due to a gap of %gs",
                          self.station, self.tree.name, len(self.buffer), gap)
            self._sync()
            return
        self.current = None
        etime = self._end(stime, len(data) >> 2)
        if etime < self.last_commit:
            log.debug("%s channel %s sent out-of-order record, buffer too small?",
                      self.station, self.tree.name)
            self._commit_data(stime, usec_correction, timing_quality, data)
            return
        self.last_commit = etime
        self._commit_data(stime, usec_correction, timing_quality, data)
        self._sync()

    def raw(self, data):
        """A RawData packet: samples continuing the previous ones."""
        current = self.current
        if current is not None:
            current.chunks.append(data)
            current.nsamples += len(data) >> 2
            current.etime = self._end(current.stime, current.nsamples)
            self._sync()
            return
        self.tree.feed(np.frombuffer(data, dtype=np.int32))
        if self.committed:
            # (SeisComP advances it also before the first commit, but then
            # the value is never used)
            self.last_commit = self._end(self.last_commit, len(data) >> 2)

    def flush(self):
        """A RawDataFlush packet: flush now, or after the current packet."""
        if self.current is not None:
            self.current.flush = True
        else:
            self.tree.flush()

    def commit_pending(self):
        """Shutdown: commit every held packet in list order, gaps or not."""
        for packet in self.buffer:
            self._commit_packet(packet)
        del self.buffer[:]

    # -- committing -------------------------------------------------------------

    def _commit_data(self, stime, usec_correction, timing_quality, data):
        self.tree.feed(np.frombuffer(data, dtype=np.int32), time=stime,
                       usec_correction=usec_correction, timing_quality=timing_quality)

    def _commit_packet(self, packet):
        # SeisComP keeps appending RawData continuations to a packet it has
        # already sent, losing them; we stop appending once it is sent
        if packet is self.current:
            self.current = None
        self.last_commit = packet.etime
        self.committed = True
        chunks = packet.chunks
        self._commit_data(packet.stime, packet.usec_correction, packet.timing_quality,
                          chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if packet.flush:
            self.tree.flush()

    def _sync(self):
        buffer = self.buffer
        # cut the buffer to its capacity
        while buffer and _tdiff(buffer[-1].etime, buffer[0].stime) * 1e-6 >= self.capacity:
            self._commit_packet(buffer[0])
            del buffer[0]
            log.debug("%s channel %s trimming buffer to its capacity (still %d pkts)",
                      self.station, self.tree.name, len(buffer))
        if not self.committed:
            return
        # held packets that now continue the committed data
        while buffer:
            if self._gap_from_last_commit(buffer[0].stime)[1]:
                break
            self._commit_packet(buffer[0])
            del buffer[0]
            log.debug("%s channel %s flushed continuous records from buffer (still %d pkts)",
                      self.station, self.tree.name, len(buffer))


# -- miniSEED input ---------------------------------------------------------------

_TIMES = struct.Struct(">HHBBBxHHhh")      # fixed header bytes 20..35


def _i32(v):
    """C int arithmetic wraps (SeisComP computes 1000000 * num_samples in int)."""
    return (v + 0x80000000) % 0x100000000 - 0x80000000


def record_times(record):
    """(start, end, rate) of a record as SeisComP's packet_begin_time,
    packet_end_time and packet_sample_rate read them; times are
    (epoch seconds, usec)."""
    year, doy, hour, minute, second, fract, nsamples, fact, mult = _TIMES.unpack_from(record, 20)
    stime = ptime_to_time(year, doy, hour, minute, second, fract * 100)
    rate = sample_rate_from_factors(fact, mult)
    if fact != 0 and mult != 0:
        return stime, add_dtime(stime[0], stime[1], _i32(1000000 * nsamples) / rate), rate
    return stime, stime, rate


class _MseedPacket:
    __slots__ = ("stime", "etime", "rate", "record")

    def __init__(self, stime, etime, rate, record):
        self.stime = stime
        self.etime = etime
        self.rate = rate
        self.record = record


class _MseedStream:
    __slots__ = ("buffer", "last_commit", "committed")

    def __init__(self):
        self.buffer = []
        self.last_commit = None
        self.committed = False


class MseedBackfill:
    """Backfilling of a station's miniSEED input, per location+channel.

    ``send(record)`` takes the place of storing the record; committed
    records are appended to ``station.records``.
    """

    def __init__(self, station, capacity):
        self.station = station
        self.capacity = float(capacity)
        self.streams = {}           # location+channel bytes -> _MseedStream

    def _commit(self, record):
        self.station.records.append(record)

    def send(self, record):
        if record_type(record) != "D":
            self._commit(record)
            return
        stime, etime, rate = record_times(record)
        ident = bytes(record[13:18]).split(b"\0", 1)[0]
        bf = self.streams.get(ident)
        if bf is None:
            bf = self.streams[ident] = _MseedStream()
        if not bf.committed:
            # the first record is released at once
            bf.last_commit = etime
            bf.committed = True
            self._commit(record)
            return
        gap = _tdiff(stime, bf.last_commit) * 1e-6
        if gap * rate >= 1:
            _insert(bf.buffer, _MseedPacket(stime, etime, rate, record))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s channel %s data queued (currently %d pkts) due to a gap of %gs",
                          self.station.key, ident.decode("latin-1"), len(bf.buffer), gap)
            self._sync(ident, bf)
            return
        if etime < bf.last_commit:
            log.debug("%s channel %s sent out-of-order record, buffer too small?",
                      self.station.key, ident.decode("latin-1"))
            self._commit(record)
            return
        bf.last_commit = etime
        self._commit(record)
        self._sync(ident, bf)

    def _sync(self, ident, bf):
        buffer = bf.buffer
        while buffer:
            used = _tdiff(buffer[-1].etime, buffer[0].stime) * 1e-6
            if used < self.capacity:
                break
            packet = buffer.pop(0)
            self._commit(packet.record)
            bf.last_commit = packet.etime
            bf.committed = True
            log.debug("%s channel %s trimming buffer to its capacity (%g > %g, still %d pkts)",
                      self.station.key, ident.decode("latin-1"), used, self.capacity,
                      len(buffer))
        if not bf.committed:
            return
        while buffer:
            packet = buffer[0]
            if _tdiff(packet.stime, bf.last_commit) * 1e-6 * packet.rate >= 1:
                break
            del buffer[0]
            self._commit(packet.record)
            bf.last_commit = packet.etime
            log.debug("%s channel %s flushed continuous records from buffer (still %d pkts)",
                      self.station.key, ident.decode("latin-1"), len(buffer))

    def commit_pending(self):
        """Shutdown: commit every held record, streams in id order."""
        for ident in sorted(self.streams):
            bf = self.streams[ident]
            for packet in bf.buffer:
                self._commit(packet.record)
            del bf.buffer[:]

    @property
    def pending(self):
        """Number of records held."""
        return sum(len(bf.buffer) for bf in self.streams.values())

"""miniSEED 2 records: pack int32 samples into Steim1/Steim2 records, and read
records back.

The packing is SeisComP's, word for word (see ``src/_ext/_steim_core.pxi``),
and the header is written as SeisComP's seedlink writes it: start time rounded
to 0.1 ms with the remainder in blockette 1001, sample-rate factor and
multiplier from the rate's fraction, data at offset 64.

Times are ``int`` nanoseconds since 1970-01-01 UTC.  miniSEED 2 holds
microseconds, so anything below a microsecond is dropped (floored).

>>> import numpy as np
>>> data = pack(np.arange(1000, dtype=np.int32), network="XX", station="TEST",
...             location="00", channel="HHZ", starttime_ns=1_700_000_000_000_000_000,
...             sample_rate=100)
>>> len(data) % 512, [r.channel for r in unpack(data)][:1]
(0, ['HHZ'])
>>> int(np.concatenate([r.samples for r in unpack(data)]).sum())
499500
"""

from fractions import Fraction

import numpy as np

from ._ext import mseed as _kernel
from .errors import RecordError

__all__ = ["pack", "unpack", "Record", "RecordPacker", "RecordError", "sample_rate_fraction",
           "sample_rate_from_factors"]

_LEVELS = {"steim1": 1, "steim2": 2}
_ENCODING_NAMES = {0: "ascii", 1: "int16", 3: "int32", 4: "float32", 5: "float64",
                   10: "steim1", 11: "steim2"}


def sample_rate_fraction(sample_rate):
    """Return ``(num, den)`` for a rate given as int, float, Fraction or a
    ``(num, den)`` pair.  Floats must be within 1e-9 of a fraction with a
    denominator up to 65535 (``100``, ``0.1``, ``400/3`` all are)."""
    if isinstance(sample_rate, tuple):
        num, den = (int(v) for v in sample_rate)
        frac = Fraction(num, den) if den else None
    elif isinstance(sample_rate, (int, np.integer, Fraction)):
        frac = Fraction(sample_rate)
    else:
        value = float(sample_rate)
        frac = Fraction(value).limit_denominator(65535)
        if value <= 0 or abs(float(frac) - value) > 1e-9 * value:
            raise ValueError("sample rate %r is not a fraction N/D with D <= 65535" % (sample_rate,))
    if frac is None or frac <= 0:
        raise ValueError("sample rate must be positive, got %r" % (sample_rate,))
    return frac.numerator, frac.denominator


def _level(encoding):
    try:
        return _LEVELS[str(encoding).lower()]
    except KeyError:
        raise ValueError("encoding must be 'steim1' or 'steim2', got %r" % (encoding,)) from None


class RecordPacker(_kernel.RecordPacker):
    """Streaming packer for one channel: ``feed()`` chunks, get finished
    records as ``bytes``; ``flush()`` closes the partial record.

    Chunked feeding gives exactly the bytes of one-shot feeding.  The first
    difference of a record is taken against the last sample of the previous
    record (``prev_sample`` before the first one), as SeisComP does.

    ``set_time(ns)`` re-anchors the clock: the next sample fed has that time.
    """

    def __init__(self, network, station, location, channel, sample_rate, *,
                 encoding="steim2", record_length=512, timing_quality=None,
                 starttime_ns=0, sequence_number=0, usec_correction=0, prev_sample=0):
        num, den = sample_rate_fraction(sample_rate)
        super().__init__(network, station, location, channel, num, den,
                         level=_level(encoding), record_length=record_length,
                         timing_quality=timing_quality, usec_correction=usec_correction,
                         starttime_ns=starttime_ns, sequence_number=sequence_number,
                         prev_sample=prev_sample)

    def feed(self, samples):
        """Add samples (any int32 array-like); return finished records."""
        return super().feed(np.ascontiguousarray(samples, dtype=np.int32))

    def feed_joined(self, samples, flush=False):
        """Like ``feed`` (then ``flush`` if asked), returning the records
        concatenated in one ``bytes``."""
        return super().feed_joined(np.ascontiguousarray(samples, dtype=np.int32), flush)


def pack(samples, *, network, station, location, channel, starttime_ns, sample_rate,
         encoding="steim2", record_length=512, timing_quality=None):
    """Pack int32 samples into miniSEED 2 records; return them concatenated,
    the last one partial (unused frames zero).

    Blockette 1001 is written only when ``timing_quality`` is given (0..100),
    as SeisComP does; without it a start time keeps only 0.1 ms resolution.

    Raises ValueError for a bad rate, encoding or record length, and for
    samples that are not representable as int32.
    """
    array = np.asarray(samples)
    if array.dtype != np.int32:
        if array.size and array.dtype.kind not in "iu":
            raise ValueError("samples must be integers, got dtype %s" % array.dtype)
        if array.size and (array.min() < -2**31 or array.max() > 2**31 - 1):
            raise ValueError("samples out of int32 range")
        array = array.astype(np.int32)
    packer = RecordPacker(network, station, location, channel, sample_rate,
                          encoding=encoding, record_length=record_length,
                          timing_quality=timing_quality, starttime_ns=starttime_ns)
    return packer.feed_joined(np.ascontiguousarray(array.ravel()), flush=True)


class Record:
    """One parsed miniSEED 2 record.

    Header fields are read from the record bytes when first asked for, so
    ``unpack`` of a large buffer costs little more than decoding its samples.

    ``starttime_ns`` is the header time plus blockette 1001's microseconds;
    the header's time correction is *not* applied (it is in
    ``time_correction``, 0.0001 s units), as SeedLink servers report times.
    ``samples`` is an int32 array for integer and Steim encodings (a view
    into one array shared by all records of an ``unpack`` call), a float
    array for float encodings, ``None`` when not decoded; ``text`` holds an
    ASCII record's bytes.
    """

    __slots__ = ("_buf", "offset", "record_length", "_array", "_first", "_last", "_status",
                 "_fields")

    _NAMES = ("offset", "record_length", "_seq", "quality", "_net", "_sta", "_loc", "_cha",
              "_start_us", "num_samples", "sample_rate_factor", "sample_rate_multiplier",
              "encoding", "word_order", "_tq", "microsecond", "_frames", "time_correction",
              "flags", "_rate_b100", "_samples", "text")

    def _get(self, name):
        if self._fields is None:
            raw = self._buf[self.offset:self.offset + self.record_length]
            self._fields = _kernel.parse_records(raw, self.record_length,
                                                 self._status == 1)[0]
        return self._fields[self._NAMES.index(name)]

    def _str(self, name):
        return self._get(name).decode("ascii", "replace").strip()

    network = property(lambda self: self._str("_net"))
    station = property(lambda self: self._str("_sta"))
    location = property(lambda self: self._str("_loc"))
    channel = property(lambda self: self._str("_cha"))
    quality = property(lambda self: self._get("quality"))
    num_samples = property(lambda self: self._get("num_samples"))
    sample_rate_factor = property(lambda self: self._get("sample_rate_factor"))
    sample_rate_multiplier = property(lambda self: self._get("sample_rate_multiplier"))
    encoding = property(lambda self: self._get("encoding"))
    word_order = property(lambda self: self._get("word_order"))
    microsecond = property(lambda self: self._get("microsecond"))
    time_correction = property(lambda self: self._get("time_correction"))
    flags = property(lambda self: self._get("flags"))
    text = property(lambda self: self._get("text"))

    @property
    def sequence_number(self):
        seq = self._get("_seq")
        return int(seq) if seq.isdigit() else -1

    @property
    def starttime_ns(self):
        return self._get("_start_us") * 1000

    @property
    def sample_rate(self):
        rate = self._get("_rate_b100")
        return rate if rate else sample_rate_from_factors(self.sample_rate_factor,
                                                          self.sample_rate_multiplier)

    @property
    def timing_quality(self):
        tq = self._get("_tq")
        return tq if tq >= 0 else None

    @property
    def frames(self):
        frames = self._get("_frames")
        return frames if frames >= 0 else None

    @property
    def samples(self):
        if self._status == 0:
            return self._array[self._first:self._last]
        if self._status == 1:
            values = self._get("_samples")
            return None if isinstance(values, str) else values
        return None

    def __repr__(self):
        return "<Record %s %s.%s.%s.%s %d samples @ %g Hz seq %06d>" % (
            _ENCODING_NAMES.get(self.encoding, self.encoding), self.network, self.station,
            self.location, self.channel, self.num_samples, self.sample_rate,
            self.sequence_number)

    @property
    def id(self):
        return "%s.%s.%s.%s" % (self.network, self.station, self.location, self.channel)

    @property
    def endtime_ns(self):
        """Time of the last sample (ns)."""
        if not self.sample_rate or self.num_samples == 0:
            return self.starttime_ns
        return self.starttime_ns + round((self.num_samples - 1) * 1e9 / self.sample_rate)


_STATUS_TEXT = {-1: "Steim frames hold fewer samples than the header says",
                -2: "Steim integrity check failed: last sample differs from Xn",
                -3: "invalid Steim2 sub-code",
                -10: "data area too short for its samples"}


def sample_rate_from_factors(fact, mult):
    """Sample rate (Hz) from SEED's factor and multiplier; 0.0 when unset."""
    if fact == 0 or mult == 0:
        return 0.0
    if fact > 0 and mult > 0:
        return float(fact * mult)
    if fact > 0 > mult:
        return -fact / mult
    if fact < 0 < mult:
        return -mult / fact
    return 1.0 / (fact * mult)


def unpack(data, *, decode=True, record_length=512):
    """Parse every record in ``data`` (bytes-like); return a list of Record.

    ``record_length`` is used only for records without blockette 1000.
    Raises RecordError naming the record (index, offset, id, sequence) when a
    record is corrupt: bad header, data shorter than its sample count, or a
    failed Steim integrity check.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        offsets, lengths, starts, samples, status = _kernel.decode_buffer(buf, record_length)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    if not decode:
        status = np.full(len(offsets), 2, dtype=np.int8)
    bad = np.flatnonzero(status < 0)
    if len(bad):
        _raise_corrupt(buf, offsets, lengths, status, int(bad[0]))
    starts_list = starts.tolist()
    return [_make_record(buf, off, length, samples, starts_list[i], starts_list[i + 1], st)
            for i, (off, length, st) in enumerate(zip(offsets.tolist(), lengths.tolist(),
                                                      status.tolist()))]


def _make_record(buf, offset, length, array, first, last, status):
    rec = _new_record(Record)
    rec._buf = buf
    rec.offset = offset
    rec.record_length = length
    rec._array = array
    rec._first = first
    rec._last = last
    rec._status = status
    rec._fields = None
    return rec


_new_record = object.__new__


def decode(data, *, record_length=512):
    """All samples of all integer/Steim records in ``data``, concatenated in
    record order, as one int32 array (the bulk counterpart of ``unpack``;
    records of other encodings contribute nothing).  Raises RecordError for
    a corrupt record."""
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        offsets, lengths, _, samples, status = _kernel.decode_buffer(buf, record_length)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    bad = np.flatnonzero(status < 0)
    if len(bad):
        _raise_corrupt(buf, offsets, lengths, status, int(bad[0]))
    return samples


def _raise_corrupt(buf, offsets, lengths, status, index):
    rec = _make_record(buf, int(offsets[index]), int(lengths[index]), None, 0, 0, 2)
    raise RecordError("record %d at offset %d (%s, seq %06d): %s" % (
        index, rec.offset, rec.id, rec.sequence_number, _STATUS_TEXT[int(status[index])]))

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
    records = packer.feed(np.ascontiguousarray(array.ravel()))
    records += packer.flush()
    return b"".join(records)


class Record:
    """One parsed miniSEED 2 record.

    ``starttime_ns`` is the header time plus blockette 1001's microseconds;
    the header's time correction is *not* applied (it is in
    ``time_correction``, 0.0001 s units), as SeedLink servers report times.
    ``samples`` is an int32 array for integer and Steim encodings, a float
    array for float encodings, ``None`` when not decoded; ``text`` holds an
    ASCII record's bytes.
    """

    __slots__ = ("network", "station", "location", "channel", "starttime_ns",
                 "sample_rate", "encoding", "sequence_number", "timing_quality",
                 "samples", "num_samples", "record_length", "quality",
                 "time_correction", "microsecond", "frames", "flags",
                 "sample_rate_factor", "sample_rate_multiplier", "word_order",
                 "text", "offset")

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
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    try:
        rows = _kernel.parse_records(buf, record_length, decode)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    records = []
    for index, row in enumerate(rows):
        (offset, reclen, seq, quality, net, sta, loc, cha, start_us, nsamples, fact, mult,
         encoding, word_order, tq, usec, frames, corr, flags, rate_b100, samples, text) = row
        rec = Record()
        rec.offset = offset
        rec.record_length = reclen
        rec.sequence_number = int(seq) if seq.isdigit() else -1
        rec.quality = quality
        rec.network = net.decode("ascii", "replace").strip()
        rec.station = sta.decode("ascii", "replace").strip()
        rec.location = loc.decode("ascii", "replace").strip()
        rec.channel = cha.decode("ascii", "replace").strip()
        rec.starttime_ns = start_us * 1000
        rec.num_samples = nsamples
        rec.sample_rate_factor = fact
        rec.sample_rate_multiplier = mult
        rec.sample_rate = rate_b100 if rate_b100 else sample_rate_from_factors(fact, mult)
        rec.encoding = encoding
        rec.word_order = word_order
        rec.timing_quality = tq if tq >= 0 else None
        rec.microsecond = usec
        rec.frames = frames if frames >= 0 else None
        rec.time_correction = corr
        rec.flags = flags
        rec.text = text
        if isinstance(samples, str):
            raise RecordError("record %d at offset %d (%s, seq %s): %s"
                              % (index, offset, rec.id, seq.decode("ascii", "replace"), samples))
        rec.samples = samples
        records.append(rec)
    return records

"""Prove the pure-Python reference twins against the real SeisComP output.

``tests/reference/steim_ref.py`` and ``tests/reference/mseed_ref.py`` are the
test oracles for the Cython codec.  Here they are checked against the golden
vectors recorded from SeisComP's seedlink (``shared/reference/golden``):

* every data record is decoded (X0/Xn checked, exact difference count),
  independently cross-checked with libmseed through pymseed;
* the decoded samples of each stream are re-encoded with ``SteimRefEncoder``
  (flushing where SeisComP flushed) and each record is rebuilt with
  ``mseed_ref.build_record`` from the original header values; all 512 bytes
  must be identical;
* LOG records are rebuilt from the plugin input (time and text of each type
  12 packet) and must be identical too.

A second group of tests pins down, on small hand-made inputs, the encoder
rules the golden data does not exercise (SeisComP's initial cap of 4, the
re-check loop, Steim1 rounding, Steim2 clamping, flush corner cases).
"""

from __future__ import annotations

import array
import functools
import random
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))

from mseed_ref import (  # noqa: E402
    build_log_record,
    build_record,
    parse_record,
    rate_from_fields,
    sample_rate_fields,
)
from steim_ref import (  # noqa: E402
    SteimRefEncoder,
    decode_steim,
    steim_differences,
)


def _find_golden() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "reference" / "golden"
        if candidate.is_dir():
            return candidate
    return Path("/work/shared/reference/golden")


GOLDEN = _find_golden()
CASES = ["stream100_steim2", "highrate_4000"]
PACKET = 520
RECLEN = 512
FRAMES = 7

# Records per data stream, as recorded (used to make a missing stream fail).
EXPECTED_STREAMS = {
    "stream100_steim2": {
        ("", "BHZ"): 528, ("", "BHN"): 528, ("", "BHE"): 528,
        ("", "LHZ"): 40, ("", "LHN"): 40, ("", "LHE"): 40,
        ("", "VHZ"): 5, ("", "VHN"): 4, ("", "VHE"): 4,
    },
    "highrate_4000": {
        ("00", "FHZ"): 1854, ("00", "CHZ"): 337, ("00", "DHZ"): 170,
        ("00", "DLZ"): 168, ("00", "EHZ"): 61, ("00", "SHZ"): 13,
    },
}
EXPECTED_LOG = {"stream100_steim2": 13, "highrate_4000": 3}


# ---------------------------------------------------------------------------
# Golden data loading
# ---------------------------------------------------------------------------


def _case_dir(case: str) -> Path:
    path = GOLDEN / case
    if not (path / "expected.sl").is_file():
        pytest.skip("golden vectors not available: %s" % path)
    return path


@functools.lru_cache(maxsize=None)
def _packets(case: str):
    """[(SeedLink sequence, 512-byte record)] in received order."""
    raw = (_case_dir(case) / "expected.sl").read_bytes()
    assert len(raw) % PACKET == 0, "expected.sl is not a sequence of 520-byte packets"
    out = []
    for off in range(0, len(raw), PACKET):
        head = raw[off:off + 8]
        assert head[:2] == b"SL", "bad SeedLink signature at byte %d" % off
        out.append((int(head[2:8], 16), raw[off + 8:off + PACKET]))
    return out


@functools.lru_cache(maxsize=None)
def _streams(case: str):
    """{(location, channel): [(record bytes, parsed header)]} in order."""
    streams = {}
    for _, rec in _packets(case):
        hdr = parse_record(rec)
        streams.setdefault((hdr["location"], hdr["channel"]), []).append((rec, hdr))
    return streams


def _level(encoding: int) -> int:
    return {10: 1, 11: 2}[encoding]


@functools.lru_cache(maxsize=None)
def _decoded(case: str, key):
    """(samples of the whole stream, per-record sample counts)."""
    samples = []
    counts = []
    for rec, hdr in _streams(case)[key]:
        data = rec[hdr["begin_data"]:]
        part = decode_steim(data, hdr["nsamples"], _level(hdr["encoding"]), exact=True)
        samples.extend(part)
        counts.append(len(part))
    return samples, counts


def _ptime_us(year, yday, hour, minute, second, usec) -> int:
    import datetime as dt
    days = (dt.datetime(year, 1, 1) - dt.datetime(1970, 1, 1)).days + yday - 1
    return (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000 + usec


_PLUGIN_HEADER = struct.Struct("<i10s10s6iiii")


@functools.lru_cache(maxsize=None)
def _plugin_packets(case: str):
    """Parse input.plugin: [(type, station, channel, ptime_us, payload)]."""
    buf = (_case_dir(case) / "input.plugin").read_bytes()
    out = []
    pos = 0
    while pos < len(buf):
        (ptype, sta, cha, y, d, h, m, s, us, _corr, _tq,
         size) = _PLUGIN_HEADER.unpack_from(buf, pos)
        pos += _PLUGIN_HEADER.size
        nbytes = size * 4 if ptype in (8, 9) else size if ptype in (12, 13) else 0
        payload = buf[pos:pos + nbytes]
        pos += nbytes
        when = _ptime_us(y, d, h, m, s, us) if ptype in (8, 12) else None
        out.append((ptype, sta.rstrip(b"\0").decode(), cha.rstrip(b"\0").decode(),
                    when, payload))
    return out


def _data_keys(case):
    return sorted(EXPECTED_STREAMS[case])


_DATA_PARAMS = [(c, k) for c in CASES for k in _data_keys(c)]


# ---------------------------------------------------------------------------
# Golden: structure and decoding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden_packets_and_streams(case):
    packets = _packets(case)
    seqs = [s for s, _ in packets]
    assert seqs == list(range(len(packets))), "SeedLink sequence numbers not consecutive"
    streams = _streams(case)
    counts = {k: len(v) for k, v in streams.items() if k[1] != "LOG"}
    assert counts == EXPECTED_STREAMS[case]
    assert len(streams[("", "LOG")]) == EXPECTED_LOG[case]


@pytest.mark.parametrize("case,key", _DATA_PARAMS)
def test_golden_decode_matches_libmseed(case, key):
    """Our decoder (with exact Xn/count checks) agrees with libmseed."""
    pymseed = pytest.importorskip("pymseed")
    samples, counts = _decoded(case, key)
    recs = b"".join(rec for rec, _ in _streams(case)[key])
    theirs = []
    for msr in pymseed.MS3Record.from_buffer(recs, unpack_data=True):
        theirs.extend(list(msr.datasamples))
    assert theirs == samples
    assert counts == [h["nsamples"] for _, h in _streams(case)[key]]


def test_golden_pass_through_equals_plugin_input():
    """FHZ is a pass-through of the raw input: decoded == input.plugin samples."""
    case = "highrate_4000"
    samples, _ = _decoded(case, ("00", "FHZ"))
    raw = array.array("i")
    for ptype, _, cha, _, payload in _plugin_packets(case):
        if ptype in (8, 9) and cha == "Z":
            chunk = array.array("i")
            chunk.frombytes(payload)
            if sys.byteorder != "little":
                chunk.byteswap()
            raw.extend(chunk)
    assert samples == raw.tolist()


# ---------------------------------------------------------------------------
# Golden: byte-exact re-encoding
# ---------------------------------------------------------------------------


def _reencode(case, key):
    """Re-encode a stream; flush where SeisComP did.  Returns RefRecords."""
    entries = _streams(case)[key]
    samples, counts = _decoded(case, key)
    level = _level(entries[0][1]["encoding"])
    # A record with fewer than 7 frames can only come from a flush, and a flush
    # leaves nothing pending: flush right after its last sample.  The stream's
    # end was flushed too (final flush packet).
    flush_points = set()
    total = 0
    for (_, hdr), n in zip(entries, counts):
        total += n
        if hdr["nframes"] < FRAMES:
            flush_points.add(total)
    flush_points.add(total)

    encoder = SteimRefEncoder(level, FRAMES)
    out = []
    pos = 0
    for point in sorted(flush_points):
        out.extend(encoder.feed(samples[pos:point]))
        out.extend(encoder.flush())
        pos = point
    return out


@pytest.mark.parametrize("case,key", _DATA_PARAMS)
def test_golden_reencode_byte_exact(case, key):
    entries = _streams(case)[key]
    ours = _reencode(case, key)
    assert len(ours) == len(entries)

    first = 0
    mismatches = []
    for k, (ref, (rec, hdr)) in enumerate(zip(ours, entries)):
        # The encoder's bookkeeping matches what the header says.
        assert ref.first_sample_index == first
        assert ref.nsamples == hdr["nsamples"]
        assert ref.nframes == hdr["nframes"]
        assert ref.clamped == 0
        assert hdr["seq_int"] == k
        first += ref.nsamples

        built = build_record(
            ref.data,
            seq=k,
            station=hdr["station"],
            location=hdr["location"],
            channel=hdr["channel"],
            network=hdr["network"],
            start_us=hdr["start_us"],
            nsamples=ref.nsamples,
            rate_num=hdr["rate_num"],
            rate_den=hdr["rate_den"],
            encoding=hdr["encoding"],
            timing_quality=hdr["timing_quality"],
            usec_correction=hdr["time_correct"] * 100,
            nframes=ref.nframes,
        )
        if built != rec:
            mismatches.append(k)
    assert not mismatches, "%d of %d records differ, first ones: %s" % (
        len(mismatches), len(entries), mismatches[:10])


@pytest.mark.parametrize("case,key", _DATA_PARAMS)
def test_golden_record_times_follow_first_sample_index(case, key):
    """Record k starts at t0 + first_sample_index/rate, floored to whole µs.

    This is what the lead's time stamping has to reproduce: the sample that
    opens a record (first_sample_index) fixes its start time.
    """
    entries = _streams(case)[key]
    ours = _reencode(case, key)
    num, den = entries[0][1]["rate_num"], entries[0][1]["rate_den"]
    t0 = entries[0][1]["start_us"]
    for ref, (_, hdr) in zip(ours, entries):
        exact_num = ref.first_sample_index * 1_000_000 * den
        # start - t0 must equal the exact offset or 1 µs less (double floor).
        delta = hdr["start_us"] - t0
        assert exact_num - num <= delta * num <= exact_num + num, (
            ref.first_sample_index, delta, exact_num / num)


# highrate_4000's tree (streams.xml + filters.fir): node -> (parent, taps, decimation)
_HR_TREE = {
    "FH": (None, 1, 1),            # pass-through
    "CH": (None, 160, 5),          # FS2D5
    "DH": ("CH", 96, 2),           # F96C
    "EH": ("DH", 30, 3),           # NA3
    "SH": ("DH", 260, 10),         # F260
    "F96CM": (None, 96, 2),        # no stream
    "DL": ("F96CM", 160, 5),       # FS2D5M
}
_HR_DFS = ["FH", "CH", "DH", "EH", "SH", "DL"]


def _hr_input_index(node, j):
    """Index of the input sample whose arrival makes ``node`` output ``j``."""
    parent, taps, deci = _HR_TREE[node]
    i = j * deci + taps - 1
    return i if parent is None else _hr_input_index(parent, i)


def test_golden_record_order_follows_completion():
    """``completed_after`` reproduces the station's record order.

    A full record is queued while the sample that emits its last word is
    being fed (the re-check loop empties the buffer down to below the cap
    before the next sample).  Sorting all records of highrate_4000 by the
    input sample at which they complete, then by tree order (depth first),
    with the final flush at the end in tree order, gives exactly the order of
    expected.sl.  Without the re-check loop records would complete a sample
    later and the order would differ.
    """
    case = "highrate_4000"
    keyed = []
    for key in _data_keys(case):
        node = key[1][:2]
        rank = _HR_DFS.index(node)
        for k, ref in enumerate(_reencode(case, key)):
            if ref.flushed:
                when = float("inf")
            else:
                when = _hr_input_index(node, ref.completed_after - 1)
            keyed.append(((when, rank), key[1], k))
    keyed.sort()
    recorded = []
    for _, rec in _packets(case):
        hdr = parse_record(rec)
        if hdr["channel"] != "LOG":
            recorded.append((hdr["channel"], hdr["seq_int"]))
    assert [(c, k) for _, c, k in keyed] == recorded


# ---------------------------------------------------------------------------
# Golden: LOG records
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden_log_records_from_header(case):
    entries = _streams(case)[("", "LOG")]
    for k, (rec, hdr) in enumerate(entries):
        assert hdr["seq_int"] == k
        text = hdr["data"][:hdr["nsamples"]]
        built = build_log_record(text, k, hdr["station"], hdr["network"], hdr["btime_us"])
        assert built == rec, k


@pytest.mark.parametrize("case", CASES)
def test_golden_log_records_from_plugin_input(case):
    """Each type-12 packet (its own ptime and text) yields the recorded LOG record."""
    logs = [p for p in _plugin_packets(case) if p[0] == 12]
    entries = _streams(case)[("", "LOG")]
    assert len(logs) == len(entries)
    for k, ((_, sta_key, _, when, text), (rec, hdr)) in enumerate(zip(logs, entries)):
        network, station = sta_key.split(".", 1)
        built = build_log_record(text, k, station, network, when)
        assert built == rec, k


# ---------------------------------------------------------------------------
# Header builder details
# ---------------------------------------------------------------------------


def test_sample_rate_fields_rules():
    assert sample_rate_fields(20, 1) == (20, 1)
    assert sample_rate_fields(1, 10) == (-10, 1)
    assert sample_rate_fields(400, 3) == (-3, 400)
    assert sample_rate_fields(0, 0) == (0, 0)
    for num, den in [(20, 1), (1, 10), (400, 3), (4000, 1), (2, 5)]:
        assert sample_rate_fields(*rate_from_fields(*sample_rate_fields(num, den))) == \
            sample_rate_fields(num, den)


def test_header_time_rounding_and_correction():
    base = 1_709_208_000_000_000          # 2024-02-29T12:00:00 UTC
    cases = {
        123_456: (1235, -44),
        123_449: (1234, 49),
        123_450: (1235, -50),
        999_950: (0, -50),                # rounds into the next second
    }
    for usec, (fract, b1001) in cases.items():
        rec = build_record(bytes(448), seq=5, station="FAST", location="00",
                           channel="FHZ", network="XX", start_us=base + usec,
                           nsamples=0, rate_num=4000, rate_den=1, encoding=11,
                           timing_quality=100, nframes=1)
        hdr = parse_record(rec)
        assert (hdr["fract"], hdr["usec"]) == (fract, b1001)
        assert hdr["start_us"] == base + usec
    rec999 = parse_record(build_record(bytes(448), seq=0, station="A", location="",
                                       channel="BHZ", network="XX",
                                       start_us=base + 999_950, nsamples=0,
                                       rate_num=1, rate_den=1, encoding=11,
                                       timing_quality=0))
    assert (rec999["second"], rec999["fract"]) == (1, 0)

    for corr, expected in [(0, 0), (49, 0), (50, 1), (-50, -1), (-49, 0),
                           (149, 1), (150, 2), (-150, -2), (12345, 123)]:
        hdr = parse_record(build_record(bytes(448), seq=0, station="A", location="",
                                        channel="BHZ", network="XX", start_us=base,
                                        nsamples=0, rate_num=1, rate_den=1,
                                        encoding=11, timing_quality=-1,
                                        usec_correction=corr))
        assert hdr["time_correct"] == expected, corr
        assert hdr["num_blockettes"] == 1 and hdr["b1001"] is None
        assert hdr["activity_flags"] == 0


def test_header_layout_bytes():
    rec = build_record(b"\x01\x02", seq=1234567, station="ABCDEFG", location="",
                       channel="HH", network="X", start_us=0, nsamples=3,
                       rate_num=100, rate_den=1, encoding=10, timing_quality=200,
                       nframes=2)
    assert len(rec) == RECLEN
    assert rec[:20] == b"234567D ABCDE  HH X "
    assert rec[44:48] == b"\x00\x40\x00\x30"
    assert rec[48:56] == bytes([0x03, 0xE8, 0x00, 0x38, 10, 1, 9, 0])
    assert rec[56:64] == bytes([0x03, 0xE9, 0x00, 0x00, 200, 0, 0, 2])
    assert rec[64:66] == b"\x01\x02" and rec[66:] == bytes(RECLEN - 66)


# ---------------------------------------------------------------------------
# Encoder rules on hand-made inputs
# ---------------------------------------------------------------------------


def _words(ref):
    return struct.unpack(">%dI" % (len(ref.data) // 4), ref.data)


def _nibble(ref, frame, word):
    return (_words(ref)[frame * 16] >> (30 - 2 * word)) & 3


def test_initial_cap_is_four():
    """A fresh encoder emits its first word with at most 4 differences."""
    enc = SteimRefEncoder(2)
    assert enc.feed(range(1, 5)) == []
    assert enc.buffered == 0                    # 4 diffs of 1 went out at once
    assert enc.feed(range(5, 12)) == []         # now 7 fit in a word
    assert enc.buffered == 0
    (rec,) = enc.flush()
    w = _words(rec)
    assert (w[1], w[2]) == (1, 11)              # X0, Xn
    assert w[3] == 0x01010101 and _nibble(rec, 0, 3) == 1        # 4 x 8 bit
    assert w[4] == 0x81111111 and _nibble(rec, 0, 4) == 3        # 7 x 4 bit
    assert w[0] == (1 << 24) | (3 << 22)
    assert (rec.nsamples, rec.nframes, rec.first_sample_index) == (11, 1, 0)
    assert rec.data[20:] == bytes(len(rec.data) - 20)   # everything else zero


def test_big_difference_pushes_out_buffer_and_loop_rechecks():
    enc = SteimRefEncoder(2)
    enc.feed([0, 1, 2])
    assert enc.buffered == 3
    enc.feed([100_000])
    # [0, 1, 1, 99998]: cap 1 -> the three small ones go as 3 x 10 bit, and
    # the re-check right away sends 99998 as 1 x 30 bit.
    assert enc.buffered == 0
    (rec,) = enc.flush()
    w = _words(rec)
    assert w[3] == (3 << 30) | (0 << 20) | (1 << 10) | 1 and _nibble(rec, 0, 3) == 2
    assert w[4] == (1 << 30) | 99_998 and _nibble(rec, 0, 4) == 2
    assert decode_steim(rec.data, rec.nsamples, 2, exact=True) == [0, 1, 2, 100_000]


def test_steim2_formats_all_widths():
    diffs_by_width = {7: 7, 6: -16, 5: 31, 4: -128, 3: 511, 2: -16384, 1: 536870911}
    series = []
    value = 0
    for n, d in diffs_by_width.items():
        for _ in range(n):
            value += d
            series.append(value)
    enc = SteimRefEncoder(2)
    enc.feed([0])                      # get past the initial cap of 4
    enc.flush()
    enc.feed(series)
    (rec,) = enc.flush()
    w = _words(rec)
    expected = [
        (3, 2, 4), (3, 1, 5), (3, 0, 6), (1, None, 8), (2, 3, 10), (2, 2, 15), (2, 1, 30),
    ]
    for i, (nib, dnib, _bits) in enumerate(expected):
        assert _nibble(rec, 0, 3 + i) == nib
        if dnib is not None:
            assert w[3 + i] >> 30 == dnib
    assert decode_steim(rec.data, rec.nsamples, 2, exact=True) == series
    assert rec.x0 == series[0] and rec.xn == series[-1]


def test_steim1_rounding_and_formats():
    enc = SteimRefEncoder(1)
    enc.feed([1, 2, 3])                # 3 diffs of 1: no word yet (cap 4)
    assert enc.buffered == 3
    (rec,) = enc.flush()               # 3 -> 2 x 16 bit, then 1 x 32 bit
    w = _words(rec)
    assert (_nibble(rec, 0, 3), w[3]) == (2, 0x00010001)
    assert (_nibble(rec, 0, 4), w[4]) == (3, 1)
    enc.feed([203, 204])               # diffs 200, 1 -> cap 2 -> 2 x 16 bit
    enc.feed([40_204])                 # 40000 -> 1 x 32 bit at once
    assert enc.buffered == 0
    enc.feed([40_205, 40_206, 40_207, 40_208])   # 4 x 8 bit
    (rec2,) = enc.flush()
    w = _words(rec2)
    assert (w[1], w[2]) == (203, 40_208)
    assert (_nibble(rec2, 0, 3), w[3]) == (2, (200 << 16) | 1)
    assert (_nibble(rec2, 0, 4), w[4]) == (3, 40_000)
    assert (_nibble(rec2, 0, 5), w[5]) == (1, 0x01010101)
    assert rec2.first_sample_index == 3


def test_steim1_int32_wraparound():
    samples = [2**31 - 1, -2**31, 0, 2**31 - 1]
    enc = SteimRefEncoder(1)
    recs = enc.feed(samples) + enc.flush()
    assert decode_steim(recs[0].data, 4, 1, exact=True) == samples


def test_steim2_clamping():
    enc = SteimRefEncoder(2)
    recs = enc.feed([0, 2**30, 2**30 + 1, 2**30 + 1 - 2**30 - 2**30]) + enc.flush()
    (rec,) = recs
    assert rec.clamped == 2 and enc.total_clamped == 2
    x0, xn, diffs = steim_differences(rec.data, 2)
    # 2**30 is clamped to 2**29 - 1; the next diff is taken against the TRUE
    # sample (1), and -2**30 is clamped to -2**29.
    assert diffs == [0, 2**29 - 1, 1, -2**29]
    # The record was opened with [0, clamped] buffered: X0 = true last sample
    # minus the buffered (clamped) differences, so X0 is wrong too (SeisComP).
    assert x0 == 2**30 - (2**29 - 1)
    assert xn == 2**30 + 1 - 2**30 - 2**30           # true last sample
    with pytest.raises(ValueError):
        decode_steim(rec.data, 4, 2)                  # decoded end != Xn


def test_flush_corner_cases():
    enc = SteimRefEncoder(2)
    assert enc.flush() == []                          # nothing at all
    enc.feed([0, 0, 0, 0])                            # one 4 x 8 word, buffer empty
    assert enc.buffered == 0
    (rec,) = enc.flush()                              # open record, empty buffer
    assert (rec.nsamples, rec.nframes) == (4, 1)
    assert enc.flush() == []
    # after a flush the differences continue: next diff is 5 - 0
    enc.feed([5])
    (rec,) = enc.flush()
    assert steim_differences(rec.data, 2)[2] == [5]
    assert rec.first_sample_index == 4


def _one_word_per_sample(n):
    """Alternating 0 / 100000: every difference needs a word of its own."""
    return [0 if i % 2 == 0 else 100_000 for i in range(n)]


def test_record_boundary_carry():
    # 7 frames hold 13 + 6 * 15 = 103 data words.
    enc = SteimRefEncoder(2)
    series = _one_word_per_sample(102)
    assert enc.feed(series) == []
    assert enc.buffered == 0
    tail = [100_001 + i for i in range(10)]           # 10 differences of 1
    (full,) = enc.feed(tail)                           # 7th small diff fills word 103
    assert enc.buffered == 3                           # carried into the next record
    assert (full.nsamples, full.nframes, full.first_sample_index) == (109, FRAMES, 0)
    # queued while sample 108 (the 7th of the tail) was being fed, not later
    assert (full.completed_after, full.flushed) == (109, False)
    everything = series + tail
    assert full.xn == everything[108]
    (part,) = enc.flush()
    assert (part.nsamples, part.nframes, part.first_sample_index) == (3, 1, 109)
    assert part.x0 == everything[109]
    assert (part.completed_after, part.flushed) == (112, True)
    # the first difference of the new record is relative to the old record's end
    assert steim_differences(part.data, 2)[2][0] == 1
    assert decode_steim(full.data, full.nsamples, 2, exact=True) + \
        decode_steim(part.data, part.nsamples, 2, exact=True) == everything


def test_steim1_flush_can_return_two_records():
    enc = SteimRefEncoder(1)
    assert enc.feed(_one_word_per_sample(102)) == []
    assert enc.feed([100_001, 100_002, 100_003]) == []
    assert enc.buffered == 3
    recs = enc.flush()                 # 2 x 16 completes the record, 1 x 32 opens one
    assert [(r.nsamples, r.nframes) for r in recs] == [(104, FRAMES), (1, 1)]
    assert recs[1].x0 == recs[1].xn == 100_003
    # Steim2 never needs more than one word at a flush (buffered < cap always)
    enc2 = SteimRefEncoder(2)
    enc2.feed(_one_word_per_sample(102))
    enc2.feed([100_001, 100_002, 100_003])
    assert [(r.nsamples, r.nframes) for r in enc2.flush()] == [(105, FRAMES)]


@pytest.mark.parametrize("level", [1, 2])
def test_random_streams_roundtrip_and_libmseed(level):
    """Random data with random flush points: contiguity, X0/Xn, libmseed decode."""
    pymseed = pytest.importorskip("pymseed")
    rng = random.Random(1234 + level)
    for trial in range(20):
        n = rng.randint(1, 3000)
        scale = rng.choice([3, 50, 300, 20_000, 10**6, 10**8])
        value = rng.randint(-10**6, 10**6)
        samples = []
        for _ in range(n):
            value += rng.randint(-scale, scale)
            value = max(-2**28, min(2**28, value))
            samples.append(value)
        enc = SteimRefEncoder(level)
        recs = []
        pos = 0
        while pos < n:
            step = rng.randint(1, 700)
            recs.extend(enc.feed(samples[pos:pos + step]))
            if rng.random() < 0.2:
                recs.extend(enc.flush())
            pos += step
        recs.extend(enc.flush())

        decoded = []
        blob = b""
        for k, rec in enumerate(recs):
            assert rec.first_sample_index == len(decoded)
            assert 1 <= rec.nframes <= FRAMES
            part = decode_steim(rec.data, rec.nsamples, level, exact=True)
            assert part[0] == rec.x0 and part[-1] == rec.xn
            decoded.extend(part)
            blob += build_record(rec.data, seq=k, station="TEST", location="",
                                 channel="HHZ", network="XX",
                                 start_us=rec.first_sample_index * 10_000,
                                 nsamples=rec.nsamples, rate_num=100, rate_den=1,
                                 encoding=10 if level == 1 else 11,
                                 timing_quality=100, nframes=rec.nframes)
        assert decoded == samples, trial
        theirs = []
        for msr in pymseed.MS3Record.from_buffer(blob, unpack_data=True):
            theirs.extend(list(msr.datasamples))
        assert theirs == samples, trial

"""Byte-exact against the real SeisComP daemon.

Every Steim record the daemon wrote in the golden captures is decoded, its
samples are packed again with our encoder (same carry-over, flushed where the
daemon flushed), its header is rebuilt from the parsed fields, and all 512
bytes must come out the same.
"""
import collections

import numpy as np
import pytest

from conftest import golden_case, read_sl_records
from seedlink_fast import mseed
from seedlink_fast._ext import mseed as kernel


def _streams(case):
    records = read_sl_records(golden_case(case) / "expected.sl")
    streams = collections.OrderedDict()
    for raw in records:
        rec = mseed.unpack(raw)[0]
        if rec.encoding in (10, 11):
            streams.setdefault((rec.location, rec.channel), []).append((raw, rec))
    return streams


def _repack(records):
    """Data areas of our encoder for one stream, flushing where the daemon's
    record is partial (fewer than 7 frames) and at the end (the capture ends
    with a flush packet per channel)."""
    first = records[0][1]
    packer = mseed.RecordPacker(first.network, first.station, first.location, first.channel,
                                first.sample_rate, encoding=mseed._ENCODING_NAMES[first.encoding])
    ours = []
    for index, (raw, rec) in enumerate(records):
        ours += packer.feed(rec.samples)
        if rec.frames < 7 or index == len(records) - 1:
            ours += packer.flush()
    return ours


@pytest.mark.parametrize("case", ["stream100_steim2", "highrate_4000"])
def test_records_byte_identical(case):
    streams = _streams(case)
    assert streams, "no Steim records in %s" % case
    checked = 0
    for key, records in streams.items():
        ours = _repack(records)
        assert len(ours) == len(records), key
        for (raw, rec), data in zip(records, ours):
            rebuilt = bytearray(data)
            num, den = mseed.sample_rate_fraction(rec.sample_rate)
            kernel.write_header(rebuilt, rec.network, rec.station, rec.location, rec.channel,
                                rec.sequence_number, rec.starttime_ns // 1000, rec.num_samples,
                                num, den, rec.encoding, rec.timing_quality,
                                rec.time_correction * 100, rec.frames)
            assert bytes(rebuilt) == raw, "%s.%s record %06d differs" % (
                key + (rec.sequence_number,))
            checked += 1
    assert checked >= 1700 if case == "stream100_steim2" else checked >= 2500


def test_log_records_byte_identical():
    records = read_sl_records(golden_case("stream100_steim2") / "expected.sl")
    logs = [raw for raw in records if raw[15:18] == b"LOG"]
    assert logs
    for raw in logs:
        rec = mseed.unpack(raw)[0]
        assert rec.encoding == 0 and rec.timing_quality is None
        ours = kernel.write_log_record(rec.network, rec.station, rec.starttime_ns // 1000,
                                       rec.text, rec.sequence_number)
        assert ours == raw


def test_passthrough_records_parse():
    """The foreign records of mseed_passthrough: every one parses, and the
    decodable ones decode to their declared sample count."""
    records = read_sl_records(golden_case("mseed_passthrough") / "expected.sl")
    encodings = collections.Counter()
    for raw in records:
        (rec,) = mseed.unpack(raw)
        encodings[rec.encoding] += 1
        assert rec.record_length == 512
        if rec.samples is not None:
            assert len(rec.samples) == rec.num_samples
    # Steim1/2, INT16/32, FLOAT32/64 and ASCII are all present
    assert {0, 1, 3, 4, 5, 10, 11} <= set(encodings)


def test_passthrough_decodes_like_obspy():
    obspy = pytest.importorskip("obspy")
    import io

    records = read_sl_records(golden_case("mseed_passthrough") / "expected.sl")
    compared = 0
    for raw in records:
        (rec,) = mseed.unpack(raw)
        if rec.samples is None or rec.encoding == 0:
            continue
        try:
            (trace,) = obspy.read(io.BytesIO(raw), format="MSEED")
        except Exception:
            continue      # obspy refuses some deliberately odd headers
        np.testing.assert_array_equal(np.asarray(rec.samples), trace.data)
        compared += 1
    assert compared >= 10

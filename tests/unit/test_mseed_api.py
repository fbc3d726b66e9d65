"""The public record API: header fields, times, rates, property tests."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import mseed_ref
from seedlink_fast import mseed

INT32 = st.integers(-2**31, 2**31 - 1)


def test_header_fields_round_trip():
    data = mseed.pack(np.arange(50, dtype=np.int32), network="GE", station="APE",
                      location="00", channel="BHZ", starttime_ns=1_704_067_199_999_950_000,
                      sample_rate=20, timing_quality=100)
    (rec,) = mseed.unpack(data)
    assert (rec.network, rec.station, rec.location, rec.channel) == ("GE", "APE", "00", "BHZ")
    assert rec.sequence_number == 0 and rec.quality == "D"
    assert rec.starttime_ns == 1_704_067_199_999_950_000     # 2023-12-31T23:59:59.99995
    # BTIME is rounded up into the next year; blockette 1001 takes the -50 us
    assert data[20:30] == bytes([0x07, 0xE8, 0, 1, 0, 0, 0, 0, 0, 0])
    assert rec.microsecond == -50
    assert rec.sample_rate == 20.0 and rec.timing_quality == 100
    assert rec.frames == 1 and rec.record_length == 512
    fields = mseed_ref.parse_record(data)
    assert fields["start_us"] * 1000 == rec.starttime_ns


@pytest.mark.parametrize("rate,fact_mult", [(100, (100, 1)), (0.1, (-10, 1)),
                                            ((400, 3), (-3, 400)), (1_000_000, (31250, 32))])
def test_sample_rate_factor_and_multiplier(rate, fact_mult):
    data = mseed.pack(np.zeros(10, np.int32), network="XX", station="S", location="",
                      channel="HHZ", starttime_ns=0, sample_rate=rate)
    (rec,) = mseed.unpack(data)
    assert (rec.sample_rate_factor, rec.sample_rate_multiplier) == fact_mult
    num, den = mseed.sample_rate_fraction(rate)
    assert rec.sample_rate == pytest.approx(num / den)


def test_record_start_times_follow_the_rate_exactly():
    samples = np.random.default_rng(1).integers(-2**20, 2**20, 5000).astype(np.int32)
    start = 1_600_000_000_000_000_000
    records = mseed.unpack(mseed.pack(samples, network="XX", station="S", location="",
                                      channel="HHZ", starttime_ns=start, sample_rate=(400, 3)))
    first = 0
    for rec in records:
        assert rec.starttime_ns == (start + first * 3 * 10**9 // 400) // 1000 * 1000
        first += rec.num_samples
    assert first == 5000


def test_sequence_numbers_and_set_time():
    packer = mseed.RecordPacker("XX", "S", "", "HHZ", 100, sequence_number=999_999,
                                starttime_ns=10**18)
    records = packer.feed(np.arange(3000, dtype=np.int32)) + packer.flush()
    seqs = [r.sequence_number for r in mseed.unpack(b"".join(records))]
    assert seqs[:3] == [999_999, 0, 1]
    packer.set_time(2 * 10**18)
    (rec,) = packer.feed(np.zeros(2000, np.int32))[:1] or packer.flush()
    assert mseed.unpack(rec)[0].starttime_ns == 2 * 10**18


def test_bad_arguments_raise_clearly():
    with pytest.raises(ValueError, match="encoding"):
        mseed.pack([1], network="X", station="S", location="", channel="C", starttime_ns=0,
                   sample_rate=1, encoding="int32")
    with pytest.raises(ValueError, match="record_length"):
        mseed.pack([1], network="X", station="S", location="", channel="C", starttime_ns=0,
                   sample_rate=1, record_length=500)
    with pytest.raises(ValueError, match="sample rate"):
        mseed.pack([1], network="X", station="S", location="", channel="C", starttime_ns=0,
                   sample_rate=0)
    with pytest.raises(ValueError, match="int32"):
        mseed.pack([2**31], network="X", station="S", location="", channel="C",
                   starttime_ns=0, sample_rate=1)
    with pytest.raises(mseed.RecordError, match="offset 0"):
        mseed.unpack(b"\x00" * 100)


@settings(max_examples=150, deadline=None)
@given(st.lists(INT32, max_size=1500), st.sampled_from(["steim1", "steim2"]),
       st.lists(st.integers(0, 400), max_size=8), st.sampled_from([512, 4096]))
def test_round_trip_any_int32_any_chunking(values, encoding, cuts, record_length):
    samples = np.array(values, dtype=np.int32)
    if encoding == "steim2" and len(samples) > 1:
        # Steim2 clamps differences outside 30 bits (lossy by design): keep
        # the walk inside the representable range
        samples = np.clip(samples, -2**28, 2**28 - 1).astype(np.int32)
    packer = mseed.RecordPacker("XX", "S", "", "HHZ", 100, encoding=encoding,
                                record_length=record_length)
    out, pos = [], 0
    for cut in cuts:
        out += packer.feed(samples[pos:pos + cut])
        pos += cut
    out += packer.feed(samples[pos:]) + packer.flush()
    data = b"".join(out)
    assert data == mseed.pack(samples, network="XX", station="S", location="", channel="HHZ",
                              starttime_ns=0, sample_rate=100, encoding=encoding,
                              record_length=record_length)
    records = mseed.unpack(data)
    decoded = np.concatenate([r.samples for r in records]) if records else np.zeros(0, np.int32)
    np.testing.assert_array_equal(decoded, samples)


@settings(max_examples=60, deadline=None)
@given(st.integers(-2**40, 2**40).map(lambda us: us * 1000 + 1_700_000_000 * 10**9))
def test_start_time_rounding_any_instant(start_ns):
    data = mseed.pack([1, 2, 3], network="XX", station="S", location="", channel="HHZ",
                      starttime_ns=start_ns, sample_rate=1, timing_quality=0)
    (rec,) = mseed.unpack(data)
    assert rec.starttime_ns == start_ns
    assert -50 <= rec.microsecond <= 49

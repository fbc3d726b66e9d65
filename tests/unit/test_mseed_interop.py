"""Interop with decoders and encoders nobody here wrote: pymseed (libmseed 3)
and ObsPy (libmseed 2)."""
import io

import numpy as np
import pytest

from seedlink_fast import mseed

START_NS = 1_700_000_000_123_456_000


def _signals():
    rng = np.random.default_rng(99)
    yield "broadband", np.cumsum(rng.normal(0, 40, 20000)).astype(np.int32)
    yield "int16", np.clip(rng.normal(0, 1000, 8000), -32768, 32767).astype(np.int32)
    yield "wide", rng.integers(-2**28, 2**28, 5000).astype(np.int32)
    yield "tiny", np.array([7], dtype=np.int32)


SIGNALS = list(_signals())


@pytest.mark.parametrize("encoding", ["steim1", "steim2"])
@pytest.mark.parametrize("record_length", [512, 4096])
@pytest.mark.parametrize("name,samples", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_pymseed_decodes_our_records(encoding, record_length, name, samples):
    pymseed = pytest.importorskip("pymseed")
    data = mseed.pack(samples, network="XX", station="TEST", location="00", channel="HHZ",
                      starttime_ns=START_NS, sample_rate=100, encoding=encoding,
                      record_length=record_length, timing_quality=80)
    decoded, count = [], 0
    for msr in pymseed.MS3Record.from_buffer(data, unpack_data=True):
        assert msr.sourceid == "FDSN:XX_TEST_00_H_H_Z"
        assert msr.reclen == record_length
        assert msr.samprate == 100.0
        if count == 0:
            assert msr.starttime == START_NS
        decoded.append(np.array(msr.np_datasamples, copy=True))
        count += 1
    np.testing.assert_array_equal(np.concatenate(decoded), samples)


@pytest.mark.parametrize("encoding", ["steim1", "steim2"])
@pytest.mark.parametrize("name,samples", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_obspy_decodes_our_records(encoding, name, samples):
    obspy = pytest.importorskip("obspy")
    data = mseed.pack(samples, network="XX", station="TEST", location="", channel="BHZ",
                      starttime_ns=START_NS, sample_rate=(400, 3), encoding=encoding,
                      timing_quality=100)
    stream = obspy.read(io.BytesIO(data), format="MSEED")
    stream.merge()
    (trace,) = stream
    np.testing.assert_array_equal(trace.data, samples)
    assert abs(trace.stats.sampling_rate - 400 / 3) < 1e-9
    assert trace.stats.starttime.ns == START_NS
    # without a timing quality there is no blockette 1001 (SeisComP's rule):
    # the header alone holds the start time, rounded to 0.1 ms
    data = mseed.pack(samples[:10], network="XX", station="TEST", location="", channel="BHZ",
                      starttime_ns=START_NS, sample_rate=(400, 3), encoding=encoding)
    assert obspy.read(io.BytesIO(data))[0].stats.starttime.ns == 1_700_000_000_123_500_000


@pytest.mark.parametrize("encoding", [("STEIM1", 10), ("STEIM2", 11), ("INT32", 3),
                                      ("INT16", 1)])
@pytest.mark.parametrize("byteorder", [">", "<"])
def test_we_decode_obspy_records(encoding, byteorder):
    obspy = pytest.importorskip("obspy")
    name, code = encoding
    samples = SIGNALS[1][1] if name == "INT16" else SIGNALS[0][1]
    trace = obspy.Trace(samples.astype(np.int16 if name == "INT16" else np.int32),
                        header=dict(network="GE", station="APE", location="10", channel="SHZ",
                                    sampling_rate=50.0,
                                    starttime=obspy.UTCDateTime(ns=START_NS)))
    buf = io.BytesIO()
    obspy.Stream([trace]).write(buf, format="MSEED", encoding=name, reclen=512,
                                byteorder=byteorder)
    records = mseed.unpack(buf.getvalue())
    assert {r.encoding for r in records} == {code}
    assert records[0].starttime_ns == START_NS
    assert {(r.network, r.station, r.location, r.channel) for r in records} == {
        ("GE", "APE", "10", "SHZ")}
    np.testing.assert_array_equal(np.concatenate([r.samples for r in records]), samples)


@pytest.mark.parametrize("encoding", [("STEIM1", 10), ("STEIM2", 11)])
def test_we_decode_libmseed_records(encoding):
    pymseed = pytest.importorskip("pymseed")
    name, code = encoding
    samples = SIGNALS[0][1]
    msr = pymseed.MS3Record()
    msr.reclen = 512
    msr.encoding = getattr(pymseed.DataEncoding, name)
    msr.formatversion = 2
    msr.sourceid = "FDSN:IU_ANMO_00_B_H_Z"
    msr.samprate = 20.0
    msr.starttime = START_NS
    data = b"".join(msr.generate(samples, "i"))
    records = mseed.unpack(data)
    assert {r.encoding for r in records} == {code}
    assert records[0].id == "IU.ANMO.00.BHZ"
    np.testing.assert_array_equal(np.concatenate([r.samples for r in records]), samples)


def test_float_records_decode():
    obspy = pytest.importorskip("obspy")
    for dtype, code in [(np.float32, 4), (np.float64, 5)]:
        values = np.linspace(-1, 1, 50).astype(dtype)
        trace = obspy.Trace(values, header=dict(station="F", sampling_rate=1.0))
        buf = io.BytesIO()
        obspy.Stream([trace]).write(buf, format="MSEED", reclen=512)
        (rec,) = mseed.unpack(buf.getvalue())
        assert rec.encoding == code
        np.testing.assert_array_equal(rec.samples, values)

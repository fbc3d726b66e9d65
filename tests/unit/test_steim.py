"""The Cython Steim codec against its pure-Python twin, edge cases and chunking."""
import numpy as np
import pytest

from seedlink_fast import mseed
from seedlink_fast._ext import steim

steim_ref = pytest.importorskip("reference.steim_ref")

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def _ours(samples, level, nframes=7, chunks=None):
    """Records of the kernel as (data, nsamples, nframes, first_index)."""
    data, recs, clamped = steim.encode(np.asarray(samples, dtype=np.int32), level, nframes)
    size = nframes * 64
    return [(data[i * size:(i + 1) * size], n, f, first)
            for i, (first, n, f) in enumerate(recs)], clamped


def _ref(samples, level, nframes=7):
    enc = steim_ref.SteimRefEncoder(level, frames_per_record=nframes)
    recs = enc.feed([int(v) for v in samples]) + enc.flush()
    return [(r.data, r.nsamples, r.nframes, r.first_sample_index) for r in recs]


def _edge_signals():
    rng = np.random.default_rng(20261122)
    widths = [4, 5, 6, 8, 10, 15, 30]
    yield "empty", []
    yield "one", [5]
    yield "two", [INT32_MAX, INT32_MIN]
    for n in (7, 12, 13, 14, 103, 104, 105, 195, 196, 420, 421, 1000):
        yield "ramp%d" % n, np.arange(n) * 3
    yield "constant", np.full(777, -123456)
    yield "int32_extremes", np.array([INT32_MIN, INT32_MAX] * 40 + [0, INT32_MIN, INT32_MIN])
    for w in widths:
        lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
        # differences at the exact limits of each width, and one past them
        diffs = np.array([lo, hi, lo, hi, lo - 1, hi + 1, 0] * 30)
        yield "width%d" % w, np.cumsum(diffs)
    yield "clamp", np.array([0, 2**29, -2**29, 2**30, -2**30, INT32_MAX, 0, 5, INT32_MIN])
    for seed in range(6):
        scale = [3, 30, 300, 3000, 3e5, 3e8][seed]
        walk = np.cumsum(rng.normal(0, scale, 3000))
        yield "noise%d" % seed, np.clip(walk, INT32_MIN, INT32_MAX).astype(np.int64)
    yield "mixed", np.concatenate([rng.integers(-8, 8, 500), rng.integers(-2**28, 2**28, 50),
                                   rng.integers(-200, 200, 700)])


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("name,signal", list(_edge_signals()), ids=lambda v: v if isinstance(v, str) else "")
def test_kernel_matches_reference_twin(level, name, signal):
    signal = np.asarray(signal, dtype=np.int64).astype(np.int32)
    ours, _ = _ours(signal, level)
    assert ours == _ref(signal, level)


@pytest.mark.parametrize("level", [1, 2])
def test_kernel_matches_twin_4096_records(level):
    rng = np.random.default_rng(7)
    signal = np.cumsum(rng.normal(0, 40, 9000)).astype(np.int32)
    ours, _ = _ours(signal, level, nframes=63)
    assert ours == _ref(signal, level, nframes=63)


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("name,signal", list(_edge_signals()), ids=lambda v: v if isinstance(v, str) else "")
def test_round_trip(level, name, signal):
    signal = np.asarray(signal, dtype=np.int64).astype(np.int32)
    ours, clamped = _ours(signal, level)
    if clamped:
        pytest.skip("clamped data is lossy by design")
    decoded = [steim.decode(data, n, level) for data, n, _, _ in ours]
    out = np.concatenate(decoded) if decoded else np.zeros(0, np.int32)
    np.testing.assert_array_equal(out, signal)


def test_clamping_is_counted_and_matches_seiscomp_rule():
    signal = np.array([0, 2**29, 0, -2**30, INT32_MAX], dtype=np.int32)
    ours, clamped = _ours(signal, 2)
    # differences 2**29, -2**30 and INT32_MAX + 2**30 (wraps to -2**30 - 1)
    # are outside [-2**29, 2**29); -2**29 itself fits
    assert clamped == 3
    assert ours == _ref(signal, 2)


def test_steim1_never_clamps():
    signal = np.array([INT32_MIN, INT32_MAX, INT32_MIN, 0], dtype=np.int32)
    ours, clamped = _ours(signal, 1)
    assert clamped == 0
    np.testing.assert_array_equal(steim.decode(ours[0][0], 4, 1), signal)


@pytest.mark.parametrize("level", ["steim1", "steim2"])
def test_chunked_feeding_equals_one_shot(level):
    rng = np.random.default_rng(11)
    signal = np.cumsum(rng.normal(0, 200, 20000)).astype(np.int32)

    def run(chunk_sizes):
        packer = mseed.RecordPacker("XX", "STA", "00", "HHZ", 100, encoding=level,
                                    starttime_ns=1_600_000_000_123_456_789)
        out, pos = [], 0
        for size in chunk_sizes:
            out += packer.feed(signal[pos:pos + size])
            pos += size
        out += packer.feed(signal[pos:])
        return b"".join(out + packer.flush())

    one_shot = run([])
    assert one_shot == mseed.pack(signal, network="XX", station="STA", location="00",
                                  channel="HHZ", starttime_ns=1_600_000_000_123_456_789,
                                  sample_rate=100, encoding=level)
    assert run([1] * 500) == one_shot
    assert run(list(rng.integers(0, 5000, 30))) == one_shot
    assert run([4096, 4097, 1, 0, 8191]) == one_shot


def test_decoder_rejects_corruption_with_clear_errors():
    signal = np.arange(400, dtype=np.int32) * 7
    (data, n, _, _), = _ours(signal, 2)[0]
    bad = bytearray(data)
    bad[8] ^= 0xFF                       # Xn no longer matches
    with pytest.raises(ValueError, match="Xn"):
        steim.decode(bytes(bad), n, 2)
    with pytest.raises(ValueError, match="fewer"):
        steim.decode(data, n + 1000, 2)
    bad = bytearray(data)
    bad[12] = (bad[12] & 0x3F)           # first data word: dnib 0 under nibble 2 or 3
    bad[0] = (bad[0] & 0b11110011) | 0b00001000   # nibble code 2 for word 1? keep X0
    bad[0] = bad[0]
    bad[1] = (bad[1] & 0x3F) | 0x80      # word 3 (bits 25..24 of nibble word) = code 2
    with pytest.raises(ValueError):
        steim.decode(bytes(bad), n, 2)


def test_corrupt_record_error_names_the_record():
    records = mseed.pack(np.arange(2000, dtype=np.int32), network="GE", station="APE",
                         location="", channel="BHZ", starttime_ns=0, sample_rate=20)
    bad = bytearray(records)
    bad[512 + 64 + 8] ^= 0x55            # second record's Xn
    with pytest.raises(mseed.RecordError, match=r"record 1 at offset 512 \(GE.APE..BHZ, seq 000001\)"):
        mseed.unpack(bytes(bad))
    with pytest.raises(mseed.RecordError, match="offset 1024"):
        mseed.unpack(records[:1024] + b"\x00" * 100)

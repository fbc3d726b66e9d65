"""FirDecimator against the plain reference model, bit for bit.

Every comparison is np.array_equal on float64 (never allclose): the kernel
must round exactly as SeisComP's FilterImpl::apply, see
tests/reference/fir_ref.py.  Each case runs on every kernel level the
machine supports (scalar, 128-bit, AVX2, AVX-512), which must all agree.
"""
import io
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import fir_ref  # noqa: E402

from seedlink_fast._ext.fir import FirDecimator, available_kernels  # noqa: E402

KERNELS = available_kernels()
REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEEDLINK_FAST_SHARED", REPO.parent / "shared"))
FILTERS_FIR = SHARED / "reference" / "seiscomp-filters.fir"
if not FILTERS_FIR.exists():                     # the copy shipped in the package
    FILTERS_FIR = REPO / "src" / "seedlink_fast" / "data" / "filters.fir"
GOLDEN = SHARED / "reference" / "golden"


def run_chunked(fd, x, chunks):
    """feed x to fd in pieces of the given sizes (the rest in one piece)"""
    outs, pos = [], 0
    for n in chunks:
        outs.append(fd.process(x[pos:pos + n]))
        pos += n
    outs.append(fd.process(x[pos:]))
    return np.concatenate(outs)


def random_chunks(rng, n, max_chunk):
    sizes, total = [], 0
    while total < n:
        sizes.append(int(rng.integers(0, max_chunk + 1)))
        total += sizes[-1]
    return sizes


def assert_bits(actual, expected):
    assert actual.dtype == np.float64
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if not np.array_equal(actual, expected, equal_nan=True):
        bad = np.flatnonzero(~((actual == expected) | (np.isnan(actual) & np.isnan(expected))))
        i = bad[0]
        raise AssertionError(f"{len(bad)} of {len(actual)} outputs differ; first at {i}: "
                             f"{actual[i]!r} != {expected[i]!r}")


# ---------------------------------------------------------------- the oracle

def test_reference_numpy_model_equals_scalar_model():
    """the vectorised reference is the literal C loop, operation by operation"""
    rng = np.random.default_rng(11)
    for _ in range(40):
        L = int(rng.integers(1, 30))
        D = int(rng.integers(1, L + 1))
        g = float(rng.choice([1.0, 4.0, 0.37, -1.3]))
        taps = rng.standard_normal(L)
        x = rng.integers(-2**31, 2**31, int(rng.integers(0, 120))).astype(np.float64)
        assert_bits(fir_ref.fir_outputs(x, taps, D, g), fir_ref.fir_scalar(x, taps, D, g))


def test_gain_is_applied_per_term_after_the_tap():
    """(x*c)*g and x*(c*g) round differently: the kernel must do the former
    (filterimpl.h: acc += *(p++) * points[i] * gain)"""
    rng = np.random.default_rng(3)
    taps = rng.standard_normal(64)
    x = rng.integers(-2**23, 2**23, 20000).astype(np.int32)
    g = 0.1
    model = fir_ref.fir_outputs(x, taps, 2, g)
    folded = fir_ref.fir_outputs(x, taps * g, 2, 1.0)
    assert not np.array_equal(model, folded)      # the test can tell them apart
    for k in KERNELS:
        assert_bits(FirDecimator(taps, 2, g, kernel=k).process(x), model)


def test_summation_order_is_ascending_from_zero():
    """a different association of the same terms gives other bits"""
    rng = np.random.default_rng(4)
    taps = rng.standard_normal(100)
    x = rng.standard_normal(5000) * 1e6
    model = fir_ref.fir_outputs(x, taps, 5, 1.0)
    nout = len(model)
    descending = np.zeros(nout)
    for i in reversed(range(len(taps))):
        descending = descending + x[i:i + 5 * (nout - 1) + 1:5] * taps[i]
    assert np.allclose(descending, model, rtol=1e-9, atol=1e-3)
    assert not np.array_equal(descending, model)   # same terms, other bits
    for k in KERNELS:
        assert_bits(FirDecimator(taps, 5, kernel=k).process(x), model)


# ------------------------------------------------------------ kernel vs model

@pytest.mark.parametrize("kernel", KERNELS)
def test_random_filters_bit_exact(kernel):
    rng = np.random.default_rng(2024)
    for case in range(60):
        L = int(rng.integers(1, 401)) if case else 400
        D = int(rng.integers(1, L + 1))
        g = float(rng.choice([1.0, 4.0, 0.5, 0.3, -2.5, rng.uniform(-10, 10)]))
        taps = rng.standard_normal(L) * 10.0 ** rng.integers(-6, 2)
        n = int(rng.integers(0, 3 * L + 3000))
        x = rng.integers(-2**31, 2**31, n).astype(np.int32)
        xin = x if case % 2 else x.astype(np.float64)
        fd = FirDecimator(taps, D, g, kernel=kernel)
        y = run_chunked(fd, xin, random_chunks(rng, n, 700))
        assert_bits(y, fir_ref.fir_outputs(x, taps, D, g))


@pytest.mark.parametrize("kernel", KERNELS)
def test_small_filters_and_tiny_chunks(kernel):
    rng = np.random.default_rng(7)
    for L in range(1, 13):
        for D in range(1, L + 1):
            taps = rng.standard_normal(L)
            x = rng.standard_normal(97) * 1000
            fd = FirDecimator(taps, D, 1.7, kernel=kernel)
            y = run_chunked(fd, x, [1] * 40 + [0, 2, 3])
            assert_bits(y, fir_ref.fir_outputs(x, taps, D, 1.7))


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunk_invariance(kernel):
    """any chunking, including empty and huge chunks, equals one-shot"""
    rng = np.random.default_rng(99)
    taps = rng.standard_normal(160)
    x = rng.integers(-10**6, 10**6, 30011).astype(np.int32)
    oneshot = FirDecimator(taps, 5, kernel=kernel).process(x)
    assert_bits(oneshot, fir_ref.fir_outputs(x, taps, 5))
    for max_chunk in (1, 7, 160, 1023, 1024, 1025, 5000, 40000):
        fd = FirDecimator(taps, 5, kernel=kernel)
        assert_bits(run_chunked(fd, x, random_chunks(rng, len(x), max_chunk)), oneshot)


def test_all_kernels_agree_on_awkward_values():
    """subnormals, huge values (overflow to inf), NaN, signed zeros"""
    rng = np.random.default_rng(5)
    taps = rng.standard_normal(37)
    taps[3] = -0.0
    taps[4] = 5e-324
    parts = [rng.standard_normal(300) * 1e-300, rng.standard_normal(300) * 1e300,
             np.full(50, -0.0), np.array([np.nan, np.inf, -np.inf, 0.0]),
             rng.standard_normal(500)]
    x = np.concatenate(parts)
    for g in (1.0, 0.75, 3.0):
        model = fir_ref.fir_outputs(x, taps, 3, g)
        for k in KERNELS:
            assert_bits(run_chunked(FirDecimator(taps, 3, g, kernel=k), x, [5, 100, 1]), model)


@pytest.mark.parametrize("kernel", KERNELS)
def test_int32_extremes(kernel):
    lo, hi = -2**31, 2**31 - 1
    rng = np.random.default_rng(8)
    x = rng.choice(np.array([lo, hi, 0, -1, 1], dtype=np.int32), 5000)
    x[:100] = hi
    x[100:200] = lo
    taps = rng.standard_normal(96)
    for D, g in ((2, 1.0), (5, 4.0), (1, 0.999)):
        fd = FirDecimator(taps, D, g, kernel=kernel)
        y = run_chunked(fd, x, random_chunks(rng, len(x), 300))
        assert_bits(y, fir_ref.fir_outputs(x.astype(np.float64), taps, D, g))
        # int32 input is converted exactly: same as feeding the doubles
        assert_bits(y, FirDecimator(taps, D, g, kernel=kernel).process(x.astype(np.float64)))
    # pass-through filter reproduces the samples
    assert_bits(FirDecimator([1.0], 1, kernel=kernel).process(x), x.astype(np.float64))


@pytest.mark.parametrize("kernel", KERNELS)
def test_minimum_phase_taps_used_in_given_order(kernel):
    """asymmetric taps: taps[0] weights the oldest sample of the window"""
    taps = np.array([0.5, 0.25, 0.125, 0.0625])
    fd = FirDecimator(taps, 2, kernel=kernel)
    x = np.array([1, 0, 0, 0, 2, 0, 0, 0], dtype=np.int32)
    # windows start at 0, 2, 4: [1,0,0,0] [0,0,2,0] [2,0,0,0]
    assert_bits(fd.process(x), np.array([0.5, 0.25, 1.0]))
    rng = np.random.default_rng(12)
    mp = np.exp(-np.arange(64) / 9.0)[::-1] * rng.uniform(0.5, 1.5, 64)
    x = rng.integers(-10**7, 10**7, 9999).astype(np.int32)
    assert_bits(run_chunked(FirDecimator(mp, 2, kernel=kernel), x, [33] * 50),
                fir_ref.fir_outputs(x, mp, 2))


@pytest.mark.parametrize("kernel", KERNELS)
def test_reset_restarts_from_scratch(kernel):
    rng = np.random.default_rng(13)
    taps = rng.standard_normal(50)
    a = rng.standard_normal(1234)
    b = rng.standard_normal(3210)
    fd = FirDecimator(taps, 4, 2.0, kernel=kernel)
    fd.process(a)
    assert fd.pending > 0
    fd.reset()
    assert fd.pending == 0
    assert_bits(run_chunked(fd, b, [49, 1, 1]), fir_ref.fir_outputs(b, taps, 4, 2.0))
    # the model agrees about reset too
    ref = fir_ref.FirRef(taps, 4, 2.0)
    ref.process(a)
    ref.reset()
    assert_bits(ref.process(b), fir_ref.fir_outputs(b, taps, 4, 2.0))


@pytest.mark.parametrize("kernel", KERNELS)
def test_pending_matches_seiscomp_unconsumed_count(kernel):
    rng = np.random.default_rng(14)
    for L, D in ((160, 5), (96, 2), (30, 3), (400, 10), (1, 1), (7, 7)):
        fd = FirDecimator(np.ones(L), D, kernel=kernel)
        ref = fir_ref.FirRef(np.ones(L), D)
        given = 0
        for n in random_chunks(rng, 5000, 300):
            expect_out = len(ref.process(np.zeros(n)))
            assert fd.max_out(n) == expect_out
            assert len(fd.process(np.zeros(n))) == expect_out
            given += n
            assert fd.pending == ref.pending
            assert 0 <= fd.pending < L
            # SeisComP: unconsumed = samples after the start of the next window
            nout_total = 0 if given < L else (given - L) // D + 1
            assert fd.pending == given - nout_total * D


def test_large_single_call_crosses_internal_blocks():
    rng = np.random.default_rng(15)
    taps = rng.standard_normal(400)
    x = rng.integers(-2**31, 2**31, 200_003).astype(np.int32)
    for k in KERNELS:
        assert_bits(FirDecimator(taps, 10, 4.0, kernel=k).process(x),
                    fir_ref.fir_outputs(x, taps, 10, 4.0))


def test_input_layouts():
    rng = np.random.default_rng(16)
    taps = rng.standard_normal(20)
    x = rng.standard_normal(2001)
    expect = fir_ref.fir_outputs(x[::2], taps, 3)
    assert_bits(FirDecimator(taps, 3).process(x[::2]), expect)            # strided
    assert_bits(FirDecimator(taps, 3).process(x[::2].astype(">f8")), expect)  # big-endian
    xi = rng.integers(-1000, 1000, 500).astype(np.int32)
    expect = fir_ref.fir_outputs(xi, taps, 3)
    assert_bits(FirDecimator(taps, 3).process(xi.astype(">i4")), expect)
    assert_bits(FirDecimator(taps, 3).process(list(xi.astype(float))), expect)
    out = FirDecimator(taps, 3).process(np.zeros(0))
    assert out.dtype == np.float64 and out.shape == (0,)


def test_argument_validation():
    with pytest.raises(ValueError):
        FirDecimator([], 1)
    with pytest.raises(ValueError):
        FirDecimator([1.0, 2.0], 3)            # D > L
    with pytest.raises(ValueError):
        FirDecimator([1.0, 2.0], 0)
    with pytest.raises(ValueError):
        FirDecimator([1.0, 2.0], 1.5)
    with pytest.raises(ValueError):
        FirDecimator([[1.0], [2.0]], 1)
    with pytest.raises(ValueError):
        FirDecimator([1.0, np.nan], 1)
    with pytest.raises(ValueError):
        FirDecimator([1.0], 1, gain=np.inf)
    with pytest.raises(ValueError):
        FirDecimator([1.0], 1, gain="x")
    with pytest.raises(ValueError):
        FirDecimator(["a"], 1)
    with pytest.raises(ValueError):
        FirDecimator([1.0], 1, kernel="mmx")
    fd = FirDecimator([1.0, 2.0, 3.0], 2, 0.5)
    assert (fd.length, fd.decimation, fd.gain, fd.pending) == (3, 2, 0.5, 0)
    assert_bits(fd.taps, np.array([1.0, 2.0, 3.0]))
    assert fd.kernel in KERNELS
    assert "FirDecimator" in repr(fd)
    with pytest.raises(TypeError):
        fd.process(np.zeros(10, dtype=np.int16))
    with pytest.raises(TypeError):
        fd.process(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError):
        fd.process(np.zeros((2, 5)))
    with pytest.raises(ValueError):
        fd.max_out(-1)
    assert fd.pending == 0                      # failed calls consumed nothing


def test_default_kernel_is_the_fastest_sensible_one():
    fd = FirDecimator([1.0], 1)
    assert fd.kernel == ("avx2" if "avx2" in KERNELS else KERNELS[min(1, len(KERNELS) - 1)])


# ------------------------------------------------------------- real filters

needs_filters = pytest.mark.skipif(not FILTERS_FIR.exists(), reason=f"{FILTERS_FIR} not found")


@pytest.fixture(scope="module")
def seiscomp_filters():
    return fir_ref.load_fir_file(FILTERS_FIR)


@needs_filters
def test_filters_file_shapes(seiscomp_filters):
    f = seiscomp_filters
    assert len(f) == 13
    assert {k: (len(t), d, g) for k, (t, d, g) in f.items()}["FS2D5"] == (160, 5, 1.0)
    assert f["LP"][2] == 4.0 and f["VLP"][2] == 4.0
    for name, (taps, _, _) in f.items():
        if name.endswith("M"):
            assert np.argmax(taps) > len(taps) // 2          # time-reversed causal filter
        else:
            assert np.array_equal(taps, taps[::-1])          # expanded symmetric filter


@needs_filters
def test_package_loader_gives_the_same_taps(seiscomp_filters):
    """seedlink_fast.firfile (the server's loader) agrees with the minimal parser"""
    firfile = pytest.importorskip("seedlink_fast.firfile")
    loaded = firfile.load_filters(str(FILTERS_FIR))
    assert sorted(loaded) == sorted(seiscomp_filters)
    for name, (taps, D, g) in seiscomp_filters.items():
        f = loaded[name]
        assert (f.decimation, f.gain, f.length) == (D, g, len(taps))
        assert_bits(np.asarray(f.taps, dtype=np.float64), taps)


@needs_filters
@pytest.mark.parametrize("kernel", KERNELS)
def test_seiscomp_filters_bit_exact(seiscomp_filters, kernel):
    rng = np.random.default_rng(17)
    x = (np.cumsum(rng.integers(-3000, 3001, 40000)) + rng.integers(-2**20, 2**20, 40000))
    x = np.clip(x, -2**31, 2**31 - 1).astype(np.int32)
    for name, (taps, D, g) in seiscomp_filters.items():
        fd = FirDecimator(taps, D, g, kernel=kernel)
        y = run_chunked(fd, x, random_chunks(rng, len(x), 1000))
        assert_bits(y, fir_ref.fir_outputs(x, taps, D, g))


@needs_filters
@pytest.mark.parametrize("kernel", KERNELS)
def test_cascades(seiscomp_filters, kernel):
    """FS2D5 -> LP, and SeisComP's stream100 tree FS2D5 -> F96C -> ULP -> VLP;
    children filter the parent's untruncated doubles"""
    f = seiscomp_filters
    rng = np.random.default_rng(18)
    x = np.cumsum(rng.integers(-5000, 5001, 120_000)).astype(np.int32)
    for chain in (["FS2D5", "LP"], ["FS2D5", "F96C", "ULP", "VLP"], ["F96CM", "FS2D5M"]):
        stages = [FirDecimator(*f[n], kernel=kernel) for n in chain]
        ref = fir_ref.CascadeRef([f[n] for n in chain])
        got = [[] for _ in chain]
        for blk in np.array_split(x, 1200):      # 100-sample packets, as a plugin sends
            y = blk
            for i, st in enumerate(stages):
                y = st.process(y)
                got[i].append(y)
        want = ref.process(x)
        for i in range(len(chain)):
            assert_bits(np.concatenate(got[i]), want[i])
        assert len(want[-1]) > 0


# ------------------------------------------------ golden SeisComP recordings

PLUGIN_HDR = struct.Struct("<i10s10s6iiii")


def plugin_samples(path):
    """{channel: int32 samples} from an input.plugin stream (types 8/9)"""
    buf = path.read_bytes()
    pos, chans = 0, {}
    while pos < len(buf):
        f = PLUGIN_HDR.unpack_from(buf, pos)
        pos += PLUGIN_HDR.size
        ptype, cha, size = f[0], f[2].rstrip(b"\0").decode(), f[11]
        assert ptype != 10, "gap packets are not modelled here"
        n = size * 4 if ptype in (8, 9) else (size if ptype in (12, 13) else 0)
        if ptype in (8, 9):
            chans.setdefault(cha, []).append(np.frombuffer(buf, "<i4", size, pos))
        pos += n
    return {c: np.concatenate(v) for c, v in chans.items()}


def expected_streams(path):
    """{channel code: decoded int samples} from expected.sl (520-byte packets)"""
    obspy = pytest.importorskip("obspy")
    raw = path.read_bytes()
    recs = [raw[i + 8:i + 520] for i in range(0, len(raw) - 519, 520)]
    data = {}
    for rec in recs:
        if rec[15:18] == b"LOG":
            continue
        tr = obspy.read(io.BytesIO(rec), format="MSEED")[0]
        data.setdefault(tr.stats.channel, []).append(tr.data)
    return {c: np.concatenate(v).astype(np.int64) for c, v in data.items()}


def truncated(y):
    return np.trunc(y).astype(np.int64)              # static_cast<int32_t>(double)


@needs_filters
@pytest.mark.skipif(not (GOLDEN / "stream100_steim2" / "expected.sl").exists(),
                    reason="golden stream100_steim2 not found")
def test_golden_stream100_tree(seiscomp_filters):
    """every BH/LH/VH sample SeisComP recorded, from its own input"""
    case = GOLDEN / "stream100_steim2"
    want = expected_streams(case / "expected.sl")
    f = seiscomp_filters
    for cha, x in plugin_samples(case / "input.plugin").items():
        bh, f96, lh, vh = (FirDecimator(*f[n]) for n in ("FS2D5", "F96C", "ULP", "VLP"))
        outs = {"BH": [], "LH": [], "VH": []}
        for blk in np.split(x, len(x) // 100):
            b = bh.process(blk)
            lo = lh.process(f96.process(b))
            outs["BH"].append(b)
            outs["LH"].append(lo)
            outs["VH"].append(vh.process(lo))
        for band, parts in outs.items():
            got = truncated(np.concatenate(parts))
            exp = want[band + cha]
            assert len(got) == len(exp), (band + cha, len(got), len(exp))
            assert np.array_equal(got, exp), band + cha


@needs_filters
@pytest.mark.skipif(not (GOLDEN / "highrate_4000" / "expected.sl").exists(),
                    reason="golden highrate_4000 not found")
def test_golden_highrate_tree(seiscomp_filters):
    """4000 Hz tree incl. NA3, F260 and the minimum-phase F96CM -> FS2D5M"""
    case = GOLDEN / "highrate_4000"
    want = expected_streams(case / "expected.sl")
    f = seiscomp_filters
    x = plugin_samples(case / "input.plugin")["Z"]
    st = {n: FirDecimator(*f[n]) for n in ("FS2D5", "F96C", "NA3", "F260", "F96CM", "FS2D5M")}
    outs = {k: [] for k in ("CH", "DH", "EH", "SH", "DL")}
    for blk in np.split(x, len(x) // 1000):
        ch = st["FS2D5"].process(blk)
        dh = st["F96C"].process(ch)
        outs["CH"].append(ch)
        outs["DH"].append(dh)
        outs["EH"].append(st["NA3"].process(dh))
        outs["SH"].append(st["F260"].process(dh))
        outs["DL"].append(st["FS2D5M"].process(st["F96CM"].process(blk)))
    for band, parts in outs.items():
        got = truncated(np.concatenate(parts))
        exp = want[band + "Z"]
        assert len(got) == len(exp), (band, len(got), len(exp))
        assert np.array_equal(got, exp), band

"""Window logic: coverage, gaps, tolerance, dedupe, trimming; component
rule and inventory lookup."""
import numpy as np
import pytest

from seedlink_fast import mseed
from seedlink_fast.picks import ComponentResolver, RecordSet, assess, split_records, trim
from seedlink_fast.picks.model import NS
from seedlink_fast.picks.window import Rec, missing_intervals

T0 = 1_795_305_000 * NS      # 2026-11-21T23:50:00Z


def make_records(n, rate=20, start=T0, cha="BHZ", seed=1):
    """n samples as 512-byte Steim2 records (Rec list) and the samples."""
    data = np.cumsum(np.random.default_rng(seed).integers(-100, 100, n)).astype(np.int32)
    raw = mseed.pack(data, network="XX", station="TEST", location="", channel=cha,
                     starttime_ns=start, sample_rate=rate)
    return split_records(raw), data


def fake(start_s, end_s, rate=1.0):
    n = int(round((end_s - start_s) * rate)) + 1
    return Rec("XX.TEST..BHZ", int(start_s * NS), int(end_s * NS), rate, n, b"")


def cov(recs, ws, we, tol=1.5):
    return assess(sorted(recs, key=lambda r: r.start_ns), int(ws * NS), int(we * NS), tol)


def test_contiguous_records_cover():
    c = cov([fake(0, 9), fake(10, 19), fake(20, 29)], 0, 29)
    assert c.complete and c.gaps == [] and c.first_ns == 0 and c.last_ns == 29 * NS


def test_gap_tolerance_in_samples():
    # 1.4 samples between last and next sample: allowed with tolerance 1.5
    assert cov([fake(0, 9), fake(10.4, 20)], 0, 20).complete
    # 2 samples apart = one sample missing
    c = cov([fake(0, 9), fake(11, 20)], 0, 20)
    assert not c.complete and c.gaps == [(9 * NS, 11 * NS)]
    assert cov([fake(0, 9), fake(11, 20)], 0, 20, tol=2.5).complete


def test_window_edges():
    # grid offset: the first sample may lie up to (tol - 0.5) samples after the start
    assert cov([fake(0.9, 20)], 0, 20).complete
    c = cov([fake(1.2, 20)], 0, 20)
    assert c.gaps == [(0, int(1.2 * NS))]
    assert cov([fake(0, 19.1)], 0, 20).complete
    assert cov([fake(0, 18.8)], 0, 20).gaps == [(int(18.8 * NS), 20 * NS)]


def test_overlaps_and_nothing():
    c = cov([fake(0, 15), fake(10, 30), fake(12, 14)], 0, 30)
    assert c.complete and c.last_ns == 30 * NS
    c = cov([], 0, 30)
    assert not c.complete and c.gaps == [(0, 30 * NS)] and not c.has_data
    assert missing_intervals(c, 0, 30 * NS) == [(0, 30 * NS)]


def test_recordset_dedupes_and_orders():
    recs, _ = make_records(3000)
    store = RecordSet("XX.TEST..BHZ")
    assert store.extend(reversed(recs)) == len(recs)
    assert store.extend(recs) == 0
    assert [r.start_ns for r in store.records()] == sorted(r.start_ns for r in recs)
    ws, we = recs[2].start_ns + 1, recs[4].end_ns - 1
    assert store.overlapping(ws, we) == recs[2:5]
    assert store.overlapping(recs[2].end_ns, recs[2].end_ns) == recs[2:3]
    freed = store.drop_before(recs[1].end_ns + 1)
    assert freed == 2 * 512 and store.earliest_start == recs[2].start_ns
    assert store.nbytes == (len(recs) - 2) * 512


def test_trim_equals_slice_and_ignores_duplicates():
    rate = 20
    recs, data = make_records(4000, rate=rate)
    ws = T0 + 7 * NS + NS // 40        # between samples
    we = T0 + 150 * NS
    first = int(np.ceil((ws - T0) * rate / NS))
    last = int(np.floor((we - T0) * rate / NS))
    # a record fetched twice, plus a re-cut copy of one starting mid-record
    extra = split_records(mseed.pack(data[500:900], network="XX", station="TEST", location="",
                                     channel="BHZ", starttime_ns=T0 + 500 * NS // rate,
                                     sample_rate=rate))
    pieces = sorted(recs + recs[3:5] + extra, key=lambda r: r.start_ns)
    (start, samples), = trim(pieces, ws, we, 1.5)
    assert start == T0 + first * NS // rate
    np.testing.assert_array_equal(samples, data[first:last + 1])


def test_trim_splits_at_gaps():
    rate = 20
    recs, data = make_records(4000, rate=rate)
    kept = recs[:3] + recs[5:]
    segs = trim(kept, T0, T0 + 190 * NS, 1.5)
    assert len(segs) == 2
    n0 = sum(r.nsamples for r in recs[:3])
    np.testing.assert_array_equal(segs[0][1], data[:n0])
    assert segs[1][0] == recs[5].start_ns
    c = assess(kept, T0, T0 + 190 * NS, 1.5)
    assert c.gaps == [(recs[2].end_ns, recs[5].start_ns)]


def test_split_records_skips_corrupt_and_log_records():
    recs, _ = make_records(2000)
    raw = [r.raw for r in recs]
    broken = bytearray(raw[1])
    broken[64:80] = b"\xff" * 16               # spoil the Steim frames
    log = bytearray(raw[0])
    log[30:32] = b"\x00\x00"                   # no samples: not a data record
    got = split_records(b"".join([bytes(log), raw[0], bytes(broken), raw[2]]))
    assert [r.start_ns for r in got] == [recs[0].start_ns, recs[2].start_ns]


def test_component_rule():
    r = ComponentResolver()
    assert r.resolve("XX", "S", "", "BHN", 0) == (["BHZ", "BHN", "BHE"], ["BHZ", "BH1", "BH2"])
    assert r.resolve("XX", "S", "00", "HH2", 0) == (["HHZ", "HH1", "HH2"], ["HHZ", "HHN", "HHE"])
    assert r.resolve("XX", "S", "", "HDF", 0) == (["HDF"], None)


def test_component_inventory():
    obspy = pytest.importorskip("obspy")
    from obspy.core.inventory import Channel, Inventory, Network, Station

    t = obspy.UTCDateTime

    def cha(code, start, end=None, loc=""):
        return Channel(code, loc, 0, 0, 0, 0, start_date=t(start), end_date=end and t(end))

    sta = Station("TEST", 0, 0, 0, channels=[
        cha("BHZ", "2020-01-01"), cha("BHN", "2020-01-01", "2025-01-01"),
        cha("BHE", "2020-01-01", "2025-01-01"), cha("BH1", "2025-01-01"),
        cha("BH2", "2025-01-01"), cha("HHZ", "2020-01-01", loc="00")])
    inv = Inventory([Network("XX", stations=[sta])])
    r = ComponentResolver(inv)
    assert r.resolve("XX", "TEST", "", "BHN", int(t("2024-06-01").ns)) == (
        ["BHZ", "BHN", "BHE"], None)
    assert r.resolve("XX", "TEST", "", "BH1", int(t("2026-06-01").ns)) == (
        ["BHZ", "BH1", "BH2"], None)
    assert r.resolve("XX", "TEST", "00", "HHZ", int(t("2026-06-01").ns)) == (["HHZ"], None)
    # not in the inventory, or nothing open: the rule
    assert r.resolve("XX", "OTHER", "", "BHZ", 0)[1] == ["BHZ", "BH1", "BH2"]
    assert r.resolve("XX", "TEST", "", "BHZ", int(t("2019-01-01").ns))[0] == [
        "BHZ", "BHN", "BHE"]

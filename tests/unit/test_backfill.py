"""Backfilling (backfill_buffer): SeisComP's hold-back of data after a gap,
for raw inputs and miniSEED input, and what shutdown commits."""
import io

import numpy as np
import pytest

from seedlink_fast import mseed
from seedlink_fast.backfill import MseedBackfill, RawBackfill, record_times
from seedlink_fast.firfile import default_filters_path, load_filters
from seedlink_fast.inifile import PluginConfig, parse_ini
from seedlink_fast.plugin import PluginWriter
from seedlink_fast.streamproc import StreamProcessor
from seedlink_fast.streamsxml import parse_streams

FILTERS = load_filters(default_filters_path())
T0 = (2024, 60, 12, 0, 0, 0)                       # 2024-02-29T12:00:00
T0_NS = 1709208000 * 10**9
T0_SEC = 1709208000

TREE = '<node stream="HH"/><node filter="FS2D5" stream="BH"><node filter="F96C" stream="LH"/></node>'

INI = """[seedlink]
network = XX
encoding = steim2
proc_gap_warn = 0
{globals}
station XX.TEST name = TEST network = XX {station}
"""


def processor(backfill=0, tree_xml=TREE, plugin=None, station_backfill=None, **kw):
    """A StreamProcessor for channel Z at 100 Hz of station XX.TEST; the
    proc is the station's, or the plugin's when ``plugin`` is given."""
    streams = parse_streams(
        '<streams><proc name="test"><tree>'
        '<input name="Z" channel="Z" location="00" rate="100"/>%s</tree></proc></streams>'
        % tree_xml, "test.xml", FILTERS)
    station = "" if plugin else "proc = test"
    if station_backfill is not None:
        station += " backfill_buffer = %s" % station_backfill
    config = parse_ini(INI.format(globals="backfill_buffer = %s" % backfill, station=station),
                       "test.ini")
    pconf = PluginConfig(name=plugin, cmd="true", proc="test") if plugin else None
    return StreamProcessor(config, plugin=pconf, filters=FILTERS, streams=streams, **kw)


def ptime(n, rate=100):
    """ptime of sample n after T0."""
    year, yday, hh, mm, ss, us = T0
    total = ((hh * 60 + mm) * 60 + ss) * 10**6 + us + n * 10**6 // rate
    sec, us = divmod(total, 10**6)
    return (year, yday, sec // 3600, sec // 60 % 60, sec % 60, us)


def signal(n, seed=1):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 300, n)).astype(np.int32)


def raw_packets(x, chunk=100, time_every=1, untimed=()):
    """One plugin packet (bytes) per chunk of channel Z; every
    ``time_every``-th packet, except those listed in ``untimed``, is a
    RawDataTime packet, the others RawData."""
    out = []
    for k, i in enumerate(range(0, len(x), chunk)):
        timed = k % time_every == 0 and k not in untimed
        buf = io.BytesIO()
        PluginWriter(buf).send_raw3("XX.TEST", "Z", ptime(i) if timed else None,
                                    0, 100, x[i:i + chunk])
        out.append(buf.getvalue())
    return out


def flush_packet():
    buf = io.BytesIO()
    PluginWriter(buf).send_flush3("XX.TEST", "Z")
    return buf.getvalue()


def run(sp, data, shutdown=True):
    sp.feed(b"".join(data))
    if shutdown:
        sp.shutdown()
    return sp.drain().get("XX.TEST", [])


def tree_of(sp):
    (tree,) = sp.trees.values()
    return tree


# -- a recording stand-in for the TreeInput ---------------------------------------

class FakeTree:
    name = "Z"
    rate = (100, 1)

    def __init__(self):
        self.events = []

    def feed(self, samples, time=None, usec_correction=0, timing_quality=-1):
        samples = np.asarray(samples)
        self.events.append(("data", time, len(samples), int(samples[0]) if len(samples) else None))

    def flush(self):
        self.events.append(("flush",))


def payload(first, n=100):
    """n samples first, first+1, ... as a packet payload."""
    return np.arange(first, first + n, dtype=np.int32).tobytes()


def at(bf, second, n=100):
    """A RawDataTime packet of n samples starting `second` s after T0 (its
    samples are numbered by their time in centiseconds)."""
    bf.raw_time(T0_SEC + second, 0, 0, 100, payload(second * 100, n))


def committed(tree):
    """First sample of each committed packet, 'F' for flushes."""
    return [e[3] if e[0] == "data" else "F" for e in tree.events]


# -- raw inputs, end to end ---------------------------------------------------------

def test_out_of_order_packets_give_the_in_order_records():
    x = signal(4000)
    pk = raw_packets(x)
    order = [0, 2, 1, 3, 4, 7, 5, 6, 8, 9, 12, 10, 11] + list(range(13, 40))
    assert sorted(order) == list(range(40))
    want = run(processor(), pk)
    assert len(want) > 5
    assert run(processor(backfill=10), [pk[i] for i in order]) == want
    # without backfilling the same shuffle gives other records
    assert run(processor(), [pk[i] for i in order]) != want


def test_out_of_order_with_raw_continuations():
    # RawData packets continue a held packet; the late packets are timed
    x = signal(4000)
    pk = raw_packets(x, untimed=(1, 5, 9, 15, 16))
    order = [0, 1, 4, 5, 2, 3, 6, 8, 9, 7, 10, 13, 14, 15, 16, 11, 12] + list(range(17, 40))
    assert sorted(order) == list(range(40))
    want = run(processor(), pk)
    assert run(processor(backfill=5), [pk[i] for i in order]) == want


def test_continuations_of_a_packet_sent_on_arrival_are_kept():
    # SeisComP's seedlink loses data here (a deliberate fix): pairs of
    # RawDataTime + RawData packets, the second pair late.  The fourth pair's
    # RawDataTime packet is held, which releases the third pair and then
    # itself at once; SeisComP keeps it as the "current" packet and appends
    # the following RawData packet to it after it was sent, so 100 samples
    # are lost every three pairs.  We keep every sample.
    x = np.arange(4000, dtype=np.int32) * 3            # every value once
    pk = raw_packets(x, time_every=2)
    pairs = [pk[i:i + 2] for i in range(0, 40, 2)]
    order = [0, 2, 1, 3] + list(range(4, 20))
    got = run(processor(backfill=5, tree_xml='<node stream="HH"/>'),
              [p for i in order for p in pairs[i]])
    values = np.concatenate([r.samples for r in mseed.unpack(b"".join(got))])
    lost = [k for k in range(40) if not np.isin(x[k * 100:k * 100 + 100], values).any()]
    assert lost == []
    assert sorted(values.tolist()) == sorted(x.tolist())


def test_in_order_stream_is_unchanged_by_backfilling():
    x = signal(3000)
    for time_every in (1, 3, 1000):
        pk = raw_packets(x, time_every=time_every)
        assert run(processor(backfill=30), pk) == run(processor(), pk)


def test_station_key_overrides_the_global():
    sp = processor(backfill=0, station_backfill=5)
    sp.feed(raw_packets(signal(100))[0])
    tree = tree_of(sp)
    assert isinstance(tree.backfill, RawBackfill) and tree.backfill.capacity == 5.0
    assert isinstance(sp.stations["XX.TEST"].mseed_backfill, MseedBackfill)


def test_backfill_zero_is_off():
    sp = processor(backfill=0)
    sp.feed(raw_packets(signal(100))[0])
    assert tree_of(sp).backfill is None
    assert sp.stations["XX.TEST"].mseed_backfill is None
    sp = processor(backfill=10, station_backfill=0)
    sp.feed(raw_packets(signal(100))[0])
    assert tree_of(sp).backfill is None


def test_gap_longer_than_capacity_is_committed_in_order():
    # 5 s of data, a real 5 s gap, 11 s of data; capacity 3 s
    x = signal(2100)
    pk = raw_packets(x)
    stream = pk[0:5] + pk[10:21]
    sp = processor(backfill=3)
    sp.feed(b"".join(stream[:7]))                      # up to packet 11: still held
    bf = tree_of(sp).backfill
    assert [p.stime[0] - T0_SEC for p in bf.buffer] == [10, 11]
    sp.feed(stream[7])                                 # packet 12: 10 s .. 13 s >= 3 s
    assert bf.buffer == [] and bf.last_commit == (T0_SEC + 13, 0)
    sp.feed(b"".join(stream[8:]))
    sp.shutdown()
    got = sp.drain()["XX.TEST"]
    # the same records as without backfilling: the data is only delayed
    assert got == run(processor(), stream)


# -- raw inputs, the rules one by one (recording tree) ------------------------------

def test_first_packet_is_released_at_once():
    tree = FakeTree()
    bf = RawBackfill(tree, 10)
    at(bf, 5)
    assert committed(tree) == [500] and bf.last_commit == (T0_SEC + 6, 0)
    at(bf, 7)                                          # a gap: held
    assert committed(tree) == [500] and len(bf.buffer) == 1


def test_capacity_overflow_commits_the_oldest():
    tree = FakeTree()
    bf = RawBackfill(tree, 3)
    at(bf, 0)
    at(bf, 2)
    assert committed(tree) == [0]
    at(bf, 4)                                          # span 2 s .. 5 s reaches 3 s
    assert committed(tree) == [0, 200]
    assert [p.stime[0] - T0_SEC for p in bf.buffer] == [4]   # 1 s gap after 3 s: kept
    at(bf, 6)
    assert committed(tree) == [0, 200, 400]
    at(bf, 5)                                          # fills the gap before 6 s
    assert committed(tree) == [0, 200, 400, 500, 600]
    assert bf.buffer == [] and bf.last_commit == (T0_SEC + 7, 0)


def test_packets_older_than_the_last_commit_go_out_at_once():
    tree = FakeTree()
    bf = RawBackfill(tree, 3)
    for second in (0, 2, 3, 4):
        at(bf, second)
    assert committed(tree) == [0, 200, 300, 400]
    at(bf, 1)                                          # ends before 5 s
    assert committed(tree) == [0, 200, 300, 400, 100]
    assert bf.last_commit == (T0_SEC + 5, 0)


def test_held_packets_are_sorted_by_end_time():
    tree = FakeTree()
    bf = RawBackfill(tree, 100)
    at(bf, 0)
    at(bf, 5, n=300)                                   # 5 s .. 8 s
    at(bf, 3)                                          # 3 s .. 4 s
    at(bf, 8)                                          # 8 s .. 9 s
    at(bf, 2, n=600)                                   # 2 s .. 8 s: after 5 s .. 8 s
    assert [(p.stime[0] - T0_SEC, p.etime[0] - T0_SEC) for p in bf.buffer] == \
        [(3, 4), (5, 8), (2, 8), (8, 9)]
    at(bf, 1)                                          # fills 1 s .. 2 s only
    assert committed(tree) == [0, 100]
    bf.commit_pending()                                # shutdown: list order, gaps or not
    assert committed(tree) == [0, 100, 300, 500, 200, 800]


def test_raw_packets_append_to_the_held_packet_and_flush_waits():
    tree = FakeTree()
    bf = RawBackfill(tree, 10)
    at(bf, 0)
    bf.raw(payload(100))                               # continues directly
    assert committed(tree) == [0, 100] and tree.events[1][1] is None    # no time set
    assert bf.last_commit == (T0_SEC + 2, 0)
    at(bf, 3)                                          # held, current
    bf.raw(payload(400))
    bf.flush()                                         # flag on the held packet
    assert committed(tree) == [0, 100]
    assert bf.buffer[0].nsamples == 200 and bf.buffer[0].etime == (T0_SEC + 5, 0)
    at(bf, 2)                                          # fills the gap
    assert committed(tree) == [0, 100, 200, 300, "F"]
    assert tree.events[3][2] == 200                    # both packets in one commit
    bf.flush()                                         # no current packet: direct
    assert committed(tree)[-1] == "F" and len(tree.events) == 6


def test_continuations_of_a_packet_committed_by_trimming_are_kept():
    # SeisComP keeps the trimmed packet as the current one and appends the
    # following RawData packets to it after it was sent, losing them until
    # the next RawDataTime packet.  We send them on (a deliberate fix).
    tree = FakeTree()
    bf = RawBackfill(tree, 2)
    at(bf, 0)
    at(bf, 5)
    bf.raw(payload(600))                               # 5 s .. 7 s reaches 2 s: sent
    assert committed(tree) == [0, 500] and tree.events[1][2] == 200
    bf.raw(payload(700))                               # continues the sent packet
    assert committed(tree) == [0, 500, 700] and tree.events[2][1] is None
    assert bf.buffer == []
    at(bf, 9)                                          # gap from 8 s: held again
    assert committed(tree) == [0, 500, 700] and len(bf.buffer) == 1


def test_one_sample_rule_uses_seiscomp_time_arithmetic():
    tree = FakeTree()
    bf = RawBackfill(tree, 10)
    at(bf, 0)
    bf.raw_time(T0_SEC + 1, 9999, 0, 100, payload(100))   # < 1 sample late: continuous
    assert len(tree.events) == 2 and bf.buffer == []
    bf.raw_time(T0_SEC + 2, 19999, 0, 100, payload(200))  # 1 sample late: a gap
    assert len(tree.events) == 2 and len(bf.buffer) == 1


# -- miniSEED input ---------------------------------------------------------------

def mseed_record(i, channel="HHN", n=100):
    """A one-record miniSEED packet of n samples starting i s after T0."""
    rec = mseed.pack(np.arange(i * 100, i * 100 + n, dtype=np.int32), network="XX",
                     station="TEST", location="", channel=channel,
                     starttime_ns=T0_NS + i * 10**9, sample_rate=100)
    assert len(rec) == 512
    return rec


def mseed_packets(records):
    buf = io.BytesIO()
    w = PluginWriter(buf)
    for rec in records:
        if isinstance(rec, str):
            w.send_log3("XX.TEST", T0, "%s", rec)
        else:
            w.send_mseed("XX.TEST", rec)
    return buf.getvalue()


def test_record_times():
    rec = mseed_record(3, n=150)
    assert record_times(rec) == ((T0_SEC + 3, 0), (T0_SEC + 4, 500000), 100.0)


def test_mseed_records_out_of_order_are_stored_in_time_order():
    recs = [mseed_record(i) for i in range(6)]
    other = [mseed_record(i, channel="HHE") for i in range(3)]
    sp = processor(backfill=10)
    sp.feed(mseed_packets([recs[0], other[0], recs[2], other[2], "a log line", recs[1],
                           recs[3], recs[5], recs[4], other[1]]))
    got = sp.drain()["XX.TEST"]
    assert got[1] == other[0]
    log_rec = got[2]
    assert mseed.unpack(log_rec)[0].channel == "LOG"    # not data: stored at once
    assert [r for r in got if r in recs] == recs
    assert [r for r in got if r in other] == other
    assert len(got) == 10


def test_mseed_without_backfill_is_stored_as_it_comes():
    recs = [mseed_record(i) for i in (0, 2, 1)]
    sp = processor(backfill=0)
    sp.feed(mseed_packets(recs))
    assert sp.drain()["XX.TEST"] == recs


def test_mseed_capacity_and_out_of_order():
    recs = [mseed_record(i) for i in range(8)]
    station = processor(backfill=2).stations["XX.TEST"]
    bf = station.mseed_backfill
    for i in (0, 3, 6):
        bf.send(recs[i])
    assert station.records == [recs[0], recs[3]]      # 3 s .. 7 s reached 2 s
    assert bf.pending == 1
    bf.send(recs[1])                                   # older than the last commit (4 s)
    assert station.records[-1] == recs[1]
    bf.send(recs[4])                                   # continues 4 s, then 5 s is missing
    bf.send(recs[5])
    assert station.records[-3:] == [recs[4], recs[5], recs[6]] and bf.pending == 0


# -- shutdown ---------------------------------------------------------------------

def _held(sp):
    return [len(tree.backfill.buffer) for tree in sp.trees.values()]


@pytest.mark.parametrize("flush", [True, False])
def test_shutdown_commits_plugin_level_and_mseed_data(flush):
    x = signal(800)
    pk = raw_packets(x)
    recs = [mseed_record(i, channel="EHZ") for i in range(4)]
    sp = processor(backfill=20, tree_xml='<node stream="HH"/>', plugin="p1",
                   flush_on_shutdown=flush)
    sp.feed(b"".join([pk[0], pk[1], pk[3], pk[5]]) + mseed_packets([recs[0], recs[2]]))
    tree = tree_of(sp)
    assert _held(sp) == [2]
    before = sp.drain()["XX.TEST"]
    assert before[-1] == recs[0]
    sp.shutdown()
    after = sp.drain()["XX.TEST"]
    assert _held(sp) == [0] and sp.stations["XX.TEST"].mseed_backfill.pending == 0
    # SeisComP's order: the proc's held packets, its encoder flush, then miniSEED
    assert after[-1] == recs[2]
    data = [r for r in before + after if r not in recs]
    samples = sum(r.num_samples for r in mseed.unpack(b"".join(data)))
    in_encoder = tree.pending_samples[1][1]
    assert samples + in_encoder == 400                 # all four packets committed
    assert (in_encoder == 0) == flush


@pytest.mark.parametrize("flush", [True, False])
def test_shutdown_and_station_level_procs(flush):
    # SeisComP does not visit station-level procs at shutdown; we commit
    # their held data when we flush their encoders anyway
    pk = raw_packets(signal(800))
    sp = processor(backfill=20, tree_xml='<node stream="HH"/>', flush_on_shutdown=flush)
    sp.feed(b"".join([pk[0], pk[2], pk[3]]))
    assert _held(sp) == [2]
    sp.shutdown()
    got = sp.drain().get("XX.TEST", [])
    if flush:
        assert _held(sp) == [0]
        assert sum(r.num_samples for r in mseed.unpack(b"".join(got))) == 300
    else:
        assert _held(sp) == [2] and got == []


def test_shutdown_of_the_reordered_stream_matches_in_order_shutdown():
    # held data at the end: shutdown sends it with its gap, as a plain
    # stream with that gap would be
    x = signal(1200)
    pk = raw_packets(x)
    want = run(processor(), pk[:8] + pk[9:12])
    assert run(processor(backfill=60), pk[:8] + pk[10:12] + [pk[9]]) == want
    assert run(processor(backfill=60), pk[:8] + pk[9:12] + [flush_packet()]) == \
        run(processor(), pk[:8] + pk[9:12] + [flush_packet()])

"""The shared client logic, driven through PollingClient with an in-memory
data source: completion, retries of missing pieces only, duplicates and
updates, expiry reports, the Z/1/2 switch, bounds, output and the CLI."""
import json

import numpy as np
import pytest

from seedlink_fast import cli
from seedlink_fast.picks import DirectoryOutput, PollingClient, format_time, write_sds
from seedlink_fast.picks.model import NS
from test_picks_window import T0, make_records

RATE = 20
PICK_T = T0 + 300 * NS


class MemorySource:
    """fetch() from a dict of stream -> records; logs every request."""

    def __init__(self, streams):
        self.streams = streams
        self.requests = []

    def fetch(self, requests):
        self.requests.append(list(requests))
        out = []
        for net, sta, loc, cha, t0, t1 in requests:
            sid = "%s.%s.%s.%s" % (net, sta, loc, cha)
            out.extend(r for r in self.streams.get(sid, ()) if r.end_ns >= t0 and r.start_ns <= t1)
        return out


def station(comps="ZNE", n=12000, drop=()):
    """10 minutes of 20 Hz for each component; records listed in `drop`
    (component, index) are left out."""
    out, data = {}, {}
    for i, c in enumerate(comps):
        recs, data[c] = make_records(n, rate=RATE, cha="BH" + c, seed=i + 1)
        out["XX.TEST..BH" + c] = [r for k, r in enumerate(recs) if (c, k) not in drop]
    return out, data


def pick(pid="p1", t=PICK_T, cha="BHZ", **extra):
    obj = {"publicID": pid, "time": format_time(t), "waveformID": "XX.TEST.." + cha}
    obj.update(extra)
    return obj


def client_for(source, **kw):
    results = []
    opts = dict(before=20, after=40, expire=600, interval=0, on_window=results.append,
                status_interval=0)
    opts.update(kw)
    return PollingClient(source, **opts), results


def test_complete_window_and_samples():
    streams, data = station()
    c, results = client_for(MemorySource(streams))
    c.add_pick(pick())
    counts = c.run(until_idle=True)
    assert counts["complete"] == 1 and counts["fetches"] == 1
    (res,) = results
    assert res.complete and list(res.components) == ["XX.TEST..BHZ", "XX.TEST..BHN",
                                                      "XX.TEST..BHE"]
    ws = PICK_T - 20 * NS
    first = -(-(ws - T0) * RATE // NS)
    for comp, cr in zip("ZNE", res.components.values()):
        assert cr.complete and cr.gaps == [] and len(cr.segments) == 1
        assert cr.start_ns == T0 + first * NS // RATE
        np.testing.assert_array_equal(cr.samples, data[comp][first:first + 60 * RATE + 1])
        want = [r.raw for r in streams[cr.stream] if r.end_ns >= ws and r.start_ns <= PICK_T
                + 40 * NS]
        assert cr.records == want


def test_retry_fetches_only_missing_pieces():
    streams, _ = station()
    full = dict(streams)
    hole = streams["XX.TEST..BHN"]
    streams["XX.TEST..BHN"] = [r for r in hole if not 300 * NS < r.start_ns - T0 < 320 * NS]
    src = MemorySource(streams)
    c, results = client_for(src)
    c.add_pick(pick())
    c._drain()
    c.poll(list(c.pending.values()))
    assert not results and len(src.requests[0]) == 3
    src.streams = full                      # the archive got the missing records
    c.poll(list(c.pending.values()))
    (res,) = results
    assert res.complete and res.attempts == 2
    (again,) = src.requests[1]              # one piece of one component
    assert again[:4] == ("XX", "TEST", "", "BHN") and again[5] - again[4] < 25 * NS


def test_dead_component_and_gap_reported_at_expiry(tmp_path):
    streams, _ = station(comps="ZN", drop={("N", 15)})     # 309..330 s: in the window
    c, results = client_for(MemorySource(streams), expire=0, output=str(tmp_path))
    c.add_pick(pick())
    counts = c.run(until_idle=True)
    assert counts["expired"] == 1
    (res,) = results
    assert res.status == "expired" and "after the pick arrived" in res.reason
    z, n, e = res.components.values()
    assert z.complete and not n.complete and len(n.gaps) == 1 and len(n.segments) == 2
    assert not e.coverage.has_data and e.records == []
    missing = res.missing()
    assert missing[0].startswith("XX.TEST..BHN: missing ") and missing[1] == (
        "XX.TEST..BHE: no data")
    summary = json.loads((tmp_path / "p1" / "summary.json").read_text())
    assert summary["status"] == "expired" and summary["missing"] == missing
    assert summary["components"]["XX.TEST..BHE"]["records"] == 0
    assert summary["components"]["XX.TEST..BHN"]["segments"] == 2
    assert sorted(p.name for p in (tmp_path / "p1").iterdir()) == [
        "XX.TEST..BHN.mseed", "XX.TEST..BHZ.mseed", "pick.xml", "summary.json"]


def test_duplicates_and_updates():
    streams, _ = station()
    src = MemorySource(streams)
    c, results = client_for(src)
    c.add_pick(pick())
    c.add_pick(pick())                                  # identical: ignored
    c.add_pick(pick(t=PICK_T + 60 * NS))                # update: replaces the window
    c.run(until_idle=True)
    (res,) = results
    assert res.start_ns == PICK_T + 40 * NS
    assert c.counts["duplicate"] == 1 and c.counts["updated"] == 1
    fetched = len(src.requests)
    c.add_pick(pick(t=PICK_T + 120 * NS))               # finished: never fetched again
    c.run(until_idle=True)
    assert len(results) == 1 and len(src.requests) == fetched
    assert c.counts["duplicate"] == 2


def test_switch_to_z12():
    streams, data = station(comps="Z12")
    c, results = client_for(MemorySource(streams))
    c.add_pick(pick())
    c.run(until_idle=True)
    (res,) = results
    assert res.complete and list(res.components) == ["XX.TEST..BHZ", "XX.TEST..BH1",
                                                      "XX.TEST..BH2"]


def test_bad_picks_filters_and_broken_callback(caplog):
    streams, _ = station()
    seen = []

    def broken(result):
        seen.append(result.pick.public_id)
        raise RuntimeError("consumer bug")

    c, results = client_for(MemorySource(streams), on_window=broken)
    c.pick_filter.phases = ["p"]
    c.add_pick("{nonsense")
    c.add_pick({"publicID": "x"})
    c.add_pick(pick("s", phaseHint="S"))
    c.add_pick(pick("a", phaseHint="P"))
    c.add_pick(pick("b", phaseHint="P", t=PICK_T + 10 * NS))
    counts = c.run(until_idle=True)
    assert counts["bad"] == 2 and counts["filtered"] == 1 and counts["complete"] == 2
    assert seen == ["a", "b"] and "consumer bug" in caplog.text


def test_max_pending_gives_up_the_oldest():
    c, results = client_for(MemorySource({}), max_pending=2, expire=600)
    for i in range(3):
        c.add_pick(pick("p%d" % i, t=PICK_T + i * NS))
    c._drain()
    assert list(c.pending) == ["p1", "p2"]
    assert results[0].pick.public_id == "p0" and "too many pending" in results[0].reason
    assert len(c.pending_report()) == 2 and "no data" in c.pending_report()[0]


def test_directory_output_name_is_sanitized(tmp_path):
    streams, _ = station()
    c, _ = client_for(MemorySource(streams), output=DirectoryOutput(tmp_path))
    c.add_pick(pick("smi:org.example/pick/1"))
    c.run(until_idle=True)
    out = tmp_path / "smi_org.example_pick_1"
    assert (out / "pick.xml").read_bytes().count(b'publicID="smi:org.example/pick/1"') == 1
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_cli_batch_from_sds(tmp_path, capsys):
    streams, _ = station()
    write_sds(tmp_path / "sds", [r for recs in streams.values() for r in recs])
    picks = tmp_path / "picks.jsonl"
    picks.write_text("\n".join(json.dumps(pick("p%d" % i, t=PICK_T + i * 30 * NS))
                               for i in range(4)) + "\n{bad\n")
    rc = cli.main(["pick-client", "polling", "--picks", str(picks),
                   "--data", "sdsarchive://%s" % (tmp_path / "sds"), "-o",
                   str(tmp_path / "out"), "--before", "20", "--after", "40", "--status", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "4 pick(s) finished" in out and "4 complete, 0 expired; 1 bad" in out
    assert len(list((tmp_path / "out").iterdir())) == 4
    rc = cli.main(["pick-client", "streaming", "--picks", str(picks), "--data", "http://x"])
    assert rc == 2 and "slink://" in capsys.readouterr().err


# -- the streaming client's buffer, without a server -------------------------------------

def streaming(**kw):
    from seedlink_fast.picks import StreamingClient

    results = []
    opts = dict(before=20, after=40, expire=600, status_interval=0, on_window=results.append)
    opts.update(kw)
    return StreamingClient("slink://127.0.0.1:1", **opts), results


def feed(client, streams):
    for seq, rec in enumerate(sorted((r for recs in streams.values() for r in recs),
                                     key=lambda r: r.end_ns)):
        client._on_record(seq, rec.raw)


def test_streaming_buffer_dedupes_and_is_bounded():
    streams, _ = station()
    c, _ = streaming(buffer_length=120)
    feed(c, streams)
    feed(c, streams)                                     # re-sent: kept once
    total = sum(len(r) for r in streams.values())
    assert c.npackets == 2 * total and c.nbytes == total * 512
    c._trim()
    for sid, store in c.buffer.items():                  # 120 s + one record per stream
        assert store.latest_end - store.earliest_start < 150 * NS
    assert c.nbytes == sum(s.nbytes for s in c.buffer.values())
    c.buffer_bytes = 10 * 512
    c._trim()
    assert c.nbytes <= 10 * 512 and c.nbytes == sum(s.nbytes for s in c.buffer.values())


def test_streaming_picks_from_buffer_and_live_records():
    streams, data = station(comps="Z12")
    c, results = streaming(buffer_length=3600)
    half = {sid: [r for r in recs if r.start_ns < PICK_T] for sid, recs in streams.items()}
    feed(c, half)
    c.add_pick(pick())
    c._drain()
    assert not results and c.selectors == {("XX", "TEST"): {"BH?.D"}}
    assert c._resubscribe_at is not None                 # would reconnect to subscribe
    rest = {sid: [r for r in recs if r.start_ns >= PICK_T] for sid, recs in streams.items()}
    feed(c, rest)
    (res,) = results
    assert res.complete and list(res.components)[1:] == ["XX.TEST..BH1", "XX.TEST..BH2"]
    assert c.watch == {}                                 # nothing left watching
    c.add_pick(pick("again", t=PICK_T - 60 * NS))        # all in the buffer: at once
    c._drain()
    assert len(results) == 2 and results[1].complete
    assert "2 complete" in c.status_line() and "streams buffered" in c.status_line()


def test_inventory_file_picks_the_components(tmp_path):
    """--inventory FILE: the open channels of the band, here Z/1/2 (and no
    Z/N/E request at all)."""
    obspy = pytest.importorskip("obspy")
    from obspy.core.inventory import Channel, Inventory, Network, Station

    start = obspy.UTCDateTime("2026-01-01")
    chans = [Channel("BH" + c, "", 0, 0, 0, 0, start_date=start) for c in "Z12"]
    inv = Inventory([Network("XX", stations=[Station("TEST", 0, 0, 0, channels=chans)])])
    inv.write(str(tmp_path / "inv.xml"), format="STATIONXML")
    streams, _ = station(comps="Z12")
    src = MemorySource(streams)
    c, results = client_for(src, inventory=str(tmp_path / "inv.xml"))
    c.add_pick(pick(cha="BH1"))
    c.run(until_idle=True)
    assert results[0].complete and list(results[0].components) == [
        "XX.TEST..BHZ", "XX.TEST..BH1", "XX.TEST..BH2"]
    assert len(src.requests) == 1 and {r[3] for r in src.requests[0]} == {"BHZ", "BH1", "BH2"}


def test_streaming_low_rate_completes_on_the_record_after_the_window():
    """0.1 Hz: the last sample inside the window is 9.9 s before its end;
    the record after the window end (not part of it) triggers the check.
    (A channel ending in X is a component of its own.)"""
    from seedlink_fast import mseed
    from seedlink_fast.picks import split_records

    c, results = streaming(before=20, after=40)
    c.add_pick(pick(cha="VHX", t=PICK_T))
    c._drain()
    we = PICK_T + 40 * NS

    def record(start_ns, n):
        return split_records(mseed.pack(np.arange(n, dtype=np.int32), network="XX",
                                        station="TEST", location="", channel="VHX",
                                        starttime_ns=start_ns, sample_rate=0.1))[0].raw

    c._on_record(1, record(we - 99_900_000_000, 10))      # up to we - 9.9 s
    assert not results
    c._on_record(2, record(we + 100_000_000, 3))          # after the window
    (res,) = results
    assert res.complete and len(res.components["XX.TEST..VHX"].records) == 1
    assert len(res.components["XX.TEST..VHX"].samples) == 6

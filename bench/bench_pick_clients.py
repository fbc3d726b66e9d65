"""Pick clients benchmark: windows per second on every data path, and the
latency from data arrival to a completed window in a live case.

One ``seedlink-fast serve`` process on 127.0.0.1 (started here, with the
tests' XX.TEST station: BH at 20 Hz, 10 minutes from 2026-11-21T23:50, its
FDSN endpoint on ``http_port`` and a raw ingest port feeding XX.LIVE, 00.HH?
at 100 Hz).  Once the server has settled:

* throughput: a batch of ``--picks`` picks spread over the 10 minutes,
  windows of 40 s on three components, handed to a fresh client and timed
  until every window is complete (pick intake included), on these paths:
  polling over SeedLink dial-up, over an SDS tree written from the server's
  records, over the FDSN endpoint (POST for the batch; GET, one request per
  stream), polling one pick per round (a connection or HTTP request each)
  over SeedLink and FDSN, and streaming from its buffer (filled by one
  warm-up pick first);
* peer, same run: ObsPy's FDSN client, ``get_waveforms`` per window against
  the same endpoint for the same windows (one HTTP request per window,
  parsed into a Stream): the reference for the cost of one request;
* latency: a pick whose 2 s window ends 4-5 s in the future on XX.LIVE,
  random samples pushed in real time in 0.1 s packets with
  ``seedlink_fast.raw.Streamer`` (Steim2 records of about 1 s); from
  feeding the window's last sample to ``on_window`` for the streaming
  client and for the polling client over SeedLink (interval 0.3 s), and to
  the first record reaching the window end at a plain SeedLink client (the
  server closes a record when it is full, so that part depends on where the
  sample lies in its record: the window end moves through the record from
  one repetition to the next).

Each repetition runs every path once (the order rotated per repetition),
then the live case; medians with min..max over repetitions.  "Other" is the
CPU of every process but this one and the server over each repetition.

Needs a checkout with ../shared beside it (the station's streams template
and FIR filters), pytest (the test helpers are imported) and, for the peer,
ObsPy.

Usage: python bench/bench_pick_clients.py [--quick] [--reps N] [--picks N] [--json FILE]
"""
import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (HERE, ROOT / "tests", ROOT / "tests" / "integration"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _util import OtherLoad, environment, module_version, spread, wait_quiet  # noqa: E402
from conftest import SHARED  # noqa: E402
from seedlink_fast.picks import (  # noqa: E402
    PollingClient, StreamingClient, format_time, write_sds)
from seedlink_fast.picks.model import NS  # noqa: E402
from server_load import proc_cpu_s  # noqa: E402
from serverproc import ServerProcess, free_port, make_station_ini  # noqa: E402
from test_pick_clients import (  # noqa: E402
    ArrivalWatch, LiveFeed, fetch_station, many_picks, polling_batch, run_in_thread,
    streaming_batch)

HALF = 20                   # window: pick +- 20 s
RUN_TIMEOUT = 60.0          # bound of one timed batch (the polling clients: expire)
LIVE_TIMEOUT = 20.0         # bound of one live case

PATHS = ["polling over SeedLink dial-up, batch",
         "polling over SDS, batch",
         "polling over FDSN, POST, batch",
         "polling over FDSN, GET (one request per stream), batch",
         "polling over SeedLink, one pick per round",
         "polling over FDSN, one pick per round",
         "streaming from its buffer",
         "peer: ObsPy FDSN get_waveforms, one request per window"]


class Span:
    """Wall clock, this process's CPU and the server's CPU over a block."""

    def __init__(self, server_pid):
        self.pid = server_pid
        self.wall = self.client_cpu = self.server_cpu = None

    def __enter__(self):
        self._s0 = proc_cpu_s(self.pid)
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._t0
        self.client_cpu = time.process_time() - self._c0
        self.server_cpu = proc_cpu_s(self.pid) - self._s0
        return False


# -- the paths: each returns the number of complete windows ---------------------------

def polling(url, lines, span):
    counts, _ = polling_batch(url, lines, around=span, expire=RUN_TIMEOUT, timeout=20)
    return counts.get("complete", 0)


def polling_per_round(url, lines, span):
    """One pick at a time: a fetch (connection, HTTP request) per window."""
    client = PollingClient(url, before=HALF, after=HALF, expire=RUN_TIMEOUT,
                           status_interval=0, timeout=20)
    counts = {}
    with span:
        for line in lines:
            client.add_pick(line)
            counts = client.run(until_idle=True)
    return counts.get("complete", 0)


def streaming(url, lines, span):
    results = streaming_batch(url, lines, around=span, timeout=RUN_TIMEOUT)
    return sum(r.complete for r in results)


def obspy_peer(base_url, lines, span):
    from obspy import UTCDateTime
    from obspy.clients.fdsn import Client

    client = Client(base_url, timeout=20, _discover_services=False)
    complete = 0
    with span:
        for line in lines:
            t = UTCDateTime(json.loads(line)["time"])
            st = client.get_waveforms("XX", "TEST", "", "BH?", t - HALF, t + HALF)
            st.merge()
            if (len(st) == 3 and all(tr.stats.starttime <= t - HALF + tr.stats.delta
                                     and tr.stats.endtime >= t + HALF - tr.stats.delta
                                     for tr in st)):
                complete += 1
    return complete


def run_path(name, ctx, lines, server_pid):
    span = Span(server_pid)
    if name.startswith("peer"):
        complete = obspy_peer(ctx["http"], lines, span)
    elif name.startswith("streaming"):
        complete = streaming(ctx["slink"], lines, span)
    else:
        url = ctx["slink"] if "SeedLink" in name else ctx["sds"] if "SDS" in name \
            else ctx["fdsn_get"] if "GET" in name else ctx["fdsn"]
        complete = (polling_per_round if "per round" in name else polling)(url, lines, span)
    return dict(path=name, windows=len(lines), complete=complete, seconds=span.wall,
                windows_per_s=len(lines) / span.wall, client_cpu_s=span.client_cpu,
                server_cpu_s=span.server_cpu)


# -- the live case ------------------------------------------------------------------

def live_latency(port, feed, rep):
    """One 2 s window on XX.LIVE ending 4-5 s ahead; seconds from
    feeding its last sample to (record at a SeedLink client, window done by
    streaming, window done by polling).  Feeding starts at `now` after a
    pause, so a record starts there; the window end moves by 0.23 s per
    repetition to sit at other places in its record (about 1 s of data)."""
    step = NS // LiveFeed.RATE
    now = int(time.time() * LiveFeed.RATE) * step
    pick_time = now + 3 * NS + (rep * 23 % 103) * step
    window_end = pick_time + NS
    pick = {"publicID": "live%d" % now, "time": format_time(pick_time),
            "waveformID": "XX.LIVE.00.HHZ"}
    done = {}
    opts = dict(before=1, after=1, expire=LIVE_TIMEOUT / 2, status_interval=0)

    def note(name):
        def on_window(result):
            done[name] = (time.time(), result.complete)
        return on_window

    clients = {"streaming": StreamingClient("slink://127.0.0.1:%d" % port, buffer_length=60,
                                            on_window=note("streaming"), **opts),
               "polling": PollingClient("slink://127.0.0.1:%d?idle=0.5" % port, interval=0.3,
                                        timeout=10, on_window=note("polling"), **opts)}
    watch = ArrivalWatch(port, window_end)
    threads = []
    try:
        for client in clients.values():
            client.add_pick(pick)
            threads.append(run_in_thread(client))
        fed_end_at = feed.realtime(now, window_end,
                                   lambda: len(done) == 2 and len(watch.arrived) == 3,
                                   LIVE_TIMEOUT)
    finally:
        for client in clients.values():
            client.stop()
        for thread in threads:
            thread.join(10)
        watch.close()
    ok = (fed_end_at is not None and len(done) == 2 and all(c for _, c in done.values())
          and len(watch.arrived) == 3)
    out = dict(path="live", complete=ok)
    if ok:
        arrived = max(watch.arrived.values())
        out["record"] = arrived - fed_end_at
        for name, (finished, _) in done.items():
            out[name] = finished - fed_end_at
            out[name + "_after_record"] = finished - arrived
    return out


# -- the run --------------------------------------------------------------------------

def start_server(work):
    port, http_port, raw_port = free_port(), free_port(), free_port()
    ini = make_station_ini(work, port, extra="http_port = %d\nraw_ingest_port = %d\n"
                           "raw_idle_flush = 0.2\n" % (http_port, raw_port))
    ini.write_text(ini.read_text() + '\nstation LIVE network = XX\n'
                   '   raw_channels = "00.HHZ:1,00.HHN:2,00.HHE:3"\n')
    srv = ServerProcess(ini, port, work)
    srv.http_port, srv.raw_port = http_port, raw_port
    return srv


def fmt(values, pattern):
    med, lo, hi = spread(values)
    return "%s | %s..%s" % (pattern % med, pattern % lo, pattern % hi)


def summarize(results, loads, reps, n):
    rows = []
    print("\n%d windows per batch (40 s on three components, BH 20 Hz, about 3 records each),"
          " %d repetitions" % (n, reps))
    print("\n| path | windows/s (median) | min..max | client CPU ms/window | "
          "server CPU ms/window | all complete |")
    print("|---|---|---|---|---|---|")
    for name in PATHS:
        runs = [r for r in results if r["path"] == name]
        if not runs:
            continue
        windows = sum(r["windows"] for r in runs)
        row = dict(path=name, windows_per_s=spread(r["windows_per_s"] for r in runs)[0],
                   all_complete=all(r["complete"] == r["windows"] for r in runs),
                   # CPU times come in 10 ms ticks: summed over the repetitions
                   client_cpu_ms=1e3 * sum(r["client_cpu_s"] for r in runs) / windows,
                   server_cpu_ms=1e3 * sum(r["server_cpu_s"] for r in runs) / windows)
        rows.append(row)
        print("| %s | %s | %.2f | %.2f | %s |" % (
            name, fmt([r["windows_per_s"] for r in runs], "%.0f"), row["client_cpu_ms"],
            row["server_cpu_ms"], "yes" if row["all_complete"] else "NO"))
    live = [r for r in results if r["path"] == "live"]
    good = [r for r in live if r["complete"]]
    if live:
        print("\nlive window (XX.LIVE, 100 Hz in 0.1 s packets), %d of %d complete; "
              "seconds from feeding the window's last sample:" % (len(good), len(live)))
        print("\n| to | median s | min..max s | ms after the record reached the plain "
              "client: median | min..max |")
        print("|---|---|---|---|---|")
    if good:
        print("| its record at a plain SeedLink client | %s | - | - |"
              % fmt([r["record"] for r in good], "%.3f"))
        for name in ("streaming", "polling"):
            label = ("window complete, streaming client" if name == "streaming" else
                     "window complete, polling client over SeedLink (interval 0.3 s)")
            print("| %s | %s | %s |" % (label, fmt([r[name] for r in good], "%.3f"), fmt(
                [1e3 * r[name + "_after_record"] for r in good], "%.1f")))
    if loads:
        print("\nother processes' CPU (all but this one and the server) per repetition: "
              "median %.0f %%, max %.0f %% of one CPU" % (spread(loads)[0], max(loads)))
    return dict(paths=rows, live_complete=len(good), live_runs=len(live),
                other_cpu_pct=loads)


def run_rep(rep, paths, with_live, ctx, srv, feed, n):
    results = []
    lines = many_picks(n, "pid%d-" % rep)          # the same windows every repetition
    k = rep % max(1, len(paths))
    for name in paths[k:] + paths[:k]:
        r = run_path(name, ctx, lines, srv.proc.pid)
        r["rep"] = rep
        results.append(r)
        print("rep %d %-56s %6.0f windows/s  %d/%d complete" % (
            rep, name, r["windows_per_s"], r["complete"], r["windows"]), flush=True)
    if with_live:
        r = live_latency(srv.port, feed, rep)
        r["rep"] = rep
        results.append(r)
        print("rep %d live: %s" % (rep, ", ".join(
            "%s %.3f s" % kv for kv in r.items() if isinstance(kv[1], float)) or "INCOMPLETE"),
            flush=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--picks", type=int, default=300, help="windows per batch")
    ap.add_argument("--quick", action="store_true", help="1 repetition of 60 windows")
    ap.add_argument("--only", default=None,
                    help="comma-separated path numbers (1-%d) and/or 'live'" % len(PATHS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.picks = 1, 60
    if not SHARED.is_dir():
        print("needs ../shared beside the checkout (or SEEDLINK_FAST_SHARED)", file=sys.stderr)
        return 2
    paths, with_live = PATHS, True
    if args.only:
        chosen = args.only.split(",")
        paths = [p for i, p in enumerate(PATHS, 1) if str(i) in chosen]
        with_live = "live" in chosen
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-picks-"))
    srv = start_server(work)
    feed = None
    results, loads = [], []
    try:
        srv.wait_settled()
        records = fetch_station(srv, "TEST")
        write_sds(work / "sds", [r for recs in records.values() for r in recs])
        port, http = srv.port, srv.http_port
        ctx = dict(slink="slink://127.0.0.1:%d" % port, sds="sdsarchive://%s" % (work / "sds"),
                   fdsn="fdsnws://127.0.0.1:%d" % http,
                   fdsn_get="fdsnws://127.0.0.1:%d?method=get" % http,
                   http="http://127.0.0.1:%d" % http)
        feed = LiveFeed(srv.raw_port)
        feed.streamer.start()
        for rep in range(args.reps):
            wait_quiet(max_other=30.0, max_wait=5.0)
            server0, t0 = proc_cpu_s(srv.proc.pid), time.perf_counter()
            with OtherLoad() as load:
                results += run_rep(rep, paths, with_live, ctx, srv, feed, args.picks)
            wall = time.perf_counter() - t0
            loads.append(max(0.0, load.percent - 100.0 * (proc_cpu_s(srv.proc.pid) - server0)
                             / wall))
    finally:
        if feed is not None:
            feed.streamer.stop()
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results, loads, args.reps, args.picks)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(environment=environment(str(ROOT), {"obspy": module_version("obspy")}),
                           settings=vars(args), results=results, summary=summary), fh, indent=1)
    ok = all(r["complete"] == r["windows"] for r in results if "windows" in r) and \
        all(r["complete"] for r in results if r["path"] == "live")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

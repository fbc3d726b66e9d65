"""``seedlink-fast bench SCENARIO --seedlink HOST:PORT ...``

SCENARIO is a name (fanout, handshake, idle, latency, ingest) or the path
of a TOML file with the same parameters (``scenario = "fanout"``,
``clients = [10]``, ...); command-line flags override the file.  Two more
names: ``setup`` writes a seedlink.ini / ring.conf for measuring a server
you start yourself, ``suite`` runs the component benchmarks (bench/suite.py).

The server is either one you run (``--seedlink``, ``--server-pid``) or
one the harness starts and stops (``--server-cmd``, ``--seiscomp-seedlink``,
``--ringserver``); several of either make a ``--compare`` run, A B A B.
"""
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import tomllib

from .. import __version__
from . import ingest, latency, procfs, proto, report, scenarios, servers

SCENARIOS = ("fanout", "handshake", "idle", "latency", "ingest")
DEFAULTS = {
    "clients": None, "protocol": 3, "start": "ALL", "station": None, "select": None,
    "records": 0, "duration": 30.0, "repeat": 3, "warmup": 1, "rounds": 50, "workers": None,
    "timeout": 10.0, "server_pid": None, "compare": None, "seedlink": None,
    "feed": None, "raw_port": None, "rate": None, "count": None, "preload": None,
    "raw_channels": 16, "sample_rate": 1_000_000, "data_seconds": 2, "packet_ms": 50,
    "server_cmd": None, "seiscomp_seedlink": None, "ringserver": None, "work_dir": None,
}
DEFAULT_CLIENTS = {"fanout": [10], "handshake": [1], "idle": [100], "latency": [1], "ingest": [1]}
DEFAULT_RATE = {"latency": [100.0], "ingest": [0.0]}
DEFAULT_COUNT = {"latency": 1000, "ingest": 100_000}
DEFAULT_PRELOAD = 20_000          # records into XX.ING before fanout/handshake on a started server
KEY_METRICS = report.KEY_METRICS    # kept importable from here
TABLE_COLUMNS = report.TABLE_COLUMNS


def add_subparser(sub):
    p = sub.add_parser(
        "bench", help="load generator / benchmark for any SeedLink 3 server",
        description="Measure a SeedLink server. SCENARIO: " + ", ".join(SCENARIOS)
                    + ", a TOML scenario file, 'setup' (write configs) or 'suite' "
                      "(the component benchmarks).")
    p.add_argument("scenario", metavar="SCENARIO")
    g = p.add_argument_group("the server")
    g.add_argument("--seedlink", metavar="HOST:PORT", help="the server to measure")
    g.add_argument("--compare", metavar="HOST:PORT,HOST:PORT",
                   help="run against each server, interleaved A B A B, and report ratios")
    g.add_argument("--server-pid", metavar="PID[,PID]",
                   help="server process(es) whose CPU time / RSS to read from /proc "
                        "(one per --compare address)")
    g.add_argument("--server-cmd", "--start-server", metavar="CMD", action="append",
                   help="start this server and stop it afterwards (repeat to compare); "
                        "'ours' = seedlink-fast serve on a generated seedlink.ini; "
                        "placeholders {ini} {port} {raw_port} {fifo} {work} {python}")
    g.add_argument("--seiscomp-seedlink", metavar="BIN",
                   help="also start SeisComP's seedlink binary on the generated seedlink.ini")
    g.add_argument("--ringserver", metavar="BIN",
                   help="also start ringserver on a generated ring.conf (fed by DataLink)")
    g.add_argument("--work-dir", metavar="DIR",
                   help="configs and buffers of started servers (default: temporary)")
    g = p.add_argument_group("what to run")
    g.add_argument("--clients", metavar="N[,N...]",
                   help="clients (fanout, latency), concurrent handshakers, idle "
                        "connections to try, real-time readers (ingest)")
    g.add_argument("--protocol", type=int, choices=(3, 4), help="SeedLink protocol (3 only so far)")
    g.add_argument("--start", metavar="ALL|SEQ|next|begin",
                   help="ALL: FETCH ALL (oldest); SEQ (hex): FETCH SEQ; begin: FETCH the "
                        "station's begin_seq from INFO STATIONS; next: DATA (real time)")
    g.add_argument("--station", metavar="NET.STA",
                   help="station (fanout default: the one with most records in INFO "
                        "STATIONS; latency/ingest: XX.LAT/XX.ING, raw feed XX.RAWL/XX.RAWI)")
    g.add_argument("--select", metavar="PAT[,PAT]", help="SELECT patterns, e.g. HHZ.D")
    g.add_argument("--records", type=int, metavar="N",
                   help="fanout: stop each client after N records (0: until END)")
    g.add_argument("--feed", "--ingest", metavar="SPEC",
                   help="latency/ingest input: plugin[:FIFO] (default; the feeder plugin), "
                        "raw[:HOST:PORT] (our raw ingest port), datalink[:HOST:PORT]; "
                        "comma-separated, one per server")
    g.add_argument("--raw-port", type=int, metavar="N",
                   help="feed the raw ingest port N of the --seedlink host")
    g.add_argument("--rate", metavar="R[,R...]",
                   help="latency: records/s (default 100); ingest: offered records/s, "
                        "0 = as fast as possible (default), raw feed: times real time")
    g.add_argument("--count", type=int, metavar="N",
                   help="latency: records per run (default 1000); ingest: records per run "
                        "(default 100000)")
    g.add_argument("--raw-channels", type=int, metavar="C", help="raw ingest: channels (16)")
    g.add_argument("--sample-rate", type=int, metavar="HZ", help="raw ingest: per channel (1e6)")
    g.add_argument("--data-seconds", type=int, metavar="S", help="raw ingest: seconds of data (2)")
    g.add_argument("--preload", type=int, metavar="N",
                   help="feed N records into XX.ING first (default %d for fanout/handshake "
                        "on a started server)" % DEFAULT_PRELOAD)
    g.add_argument("--duration", type=float, metavar="S",
                   help="time bound of one run (the listening time for --start next)")
    g.add_argument("--repeat", type=int, metavar="R", help="counted runs (default 3)")
    g.add_argument("--warmup", type=int, metavar="W", help="uncounted runs first (default 1)")
    g.add_argument("--rounds", type=int, help="handshake: connections per client (default 50)")
    g.add_argument("--workers", type=int, help="fanout: client processes")
    g.add_argument("--timeout", type=float, help="reply timeout, seconds")
    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="FILE", help="write the results as JSON")
    g.add_argument("--markdown", action="store_true", help="print a Markdown table")
    g.add_argument("--plot", metavar="DIR", help="write PNG plots here (needs matplotlib)")
    g.add_argument("--progress", action="store_true",
                   help="progress bar on stderr even when it is not a terminal")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("suite")
    g.add_argument("--quick", action="store_true", help="suite: short settings (~2 min)")
    g.add_argument("--only", metavar="NAME[,NAME]", help="suite: only these components")
    g.add_argument("--no-readme", action="store_true",
                   help="suite: do not write the results into bench/README.md")
    p.set_defaults(func=run)


def _split_list(value, cast):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [cast(v) for v in value]
    if isinstance(value, (int, float)):
        return [cast(value)]
    return [cast(x) for x in str(value).split(",") if x.strip()]


def load_params(args):
    """Defaults <- TOML file <- command-line flags."""
    params = dict(DEFAULTS)
    file_keys = set()
    scenario = args.scenario
    if scenario not in SCENARIOS:
        if not os.path.isfile(scenario):
            raise ValueError("unknown scenario %r (not %s, nor a file)"
                             % (scenario, "/".join(SCENARIOS)))
        with open(scenario, "rb") as fh:
            data = tomllib.load(fh)
        data = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = set(data) - set(DEFAULTS) - {"scenario", "description"}
        if unknown:
            raise ValueError("%s: unknown keys %s" % (scenario, ", ".join(sorted(unknown))))
        params.update(data)
        file_keys = set(data)
        params["file"] = scenario
        scenario = data.get("scenario")
        if scenario not in SCENARIOS:
            raise ValueError("%s: scenario must be one of %s" % (args.scenario, SCENARIOS))
    params["scenario"] = scenario
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            params[key] = value
    clients = _split_list(params["clients"], int) or DEFAULT_CLIENTS[scenario]
    params["clients"] = clients
    if any(c < 1 for c in clients):
        raise ValueError("--clients must be positive")
    if scenario in DEFAULT_RATE:
        rates = _split_list(params["rate"], float) or DEFAULT_RATE[scenario]
        if any(r < 0 for r in rates) or (scenario == "latency" and not all(rates)):
            raise ValueError("--rate must be positive (ingest: 0 = as fast as possible)")
        if scenario == "latency" and len(rates) > 1:
            raise ValueError("latency takes one --rate (rows are --clients)")
        params["rate"] = rates
        params["count"] = params["count"] or DEFAULT_COUNT[scenario]
        if scenario == "latency" and not 0 < params["count"] <= 100_000:
            raise ValueError("--count: 1 to 100000 latency records per run")
    if scenario == "idle" and args.warmup is None and "warmup" not in file_keys:
        params["warmup"] = 0     # an idle run is its own warm-up
    cmds = params["server_cmd"] or []
    params["server_cmd"] = [cmds] if isinstance(cmds, str) else list(cmds)
    specs = servers.ServerSpec.from_args(params["server_cmd"], params["seiscomp_seedlink"],
                                         params["ringserver"])
    targets = params["compare"] or params["seedlink"]
    targets = _split_list(targets, str) or []
    if not targets and not specs:
        raise ValueError("give --seedlink HOST:PORT, --compare HOST:PORT,HOST:PORT "
                         "or a server to start (--server-cmd, --seiscomp-seedlink, --ringserver)")
    unplaced = [s for s in specs if not s.generated]
    if specs and len(targets) != len(unplaced):
        raise ValueError("give one --seedlink/--compare address per started server whose "
                         "command has no {ini}/{port} (%d for %d)" % (len(targets), len(unplaced)))
    params["targets"] = targets
    params["specs"] = specs
    pids = _split_list(params["server_pid"], int) or []
    if pids and (specs or len(pids) != len(targets)):
        raise ValueError("--server-pid needs one PID per server (%d given for %d), and none "
                         "for servers the harness starts" % (len(pids), len(targets)))
    params["server_pid"] = pids
    if params["protocol"] != 3:
        raise ValueError("only SeedLink 3 is implemented so far (--protocol 3)")
    start = str(params["start"])
    if start.upper() == "ALL":
        start = "ALL"
    elif start.lower() in ("next", "begin"):
        start = start.lower()
    else:
        int(start, 16)   # a hex sequence number, or ValueError
    params["start"] = start
    return params


def environment():
    model = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import uvloop
        loop = uvloop.__version__
    except ImportError:
        loop = None
    return {"tool": "seedlink-fast bench %s" % __version__, "python": platform.python_version(),
            "platform": platform.platform(), "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(), "cpu_model": model, "uvloop": loop,
            "loadavg": list(os.getloadavg()),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def resolve(addr, params):
    """(station, start, expected records per client) for one server."""
    ranges = proto.station_ranges(proto.info(addr, "STATIONS", params["timeout"]))
    station = params["station"]
    if station is None:
        if not ranges:
            raise ValueError("no --station given and INFO STATIONS gave none")
        station = max(ranges, key=lambda k: proto.held_records(*ranges[k]))
    start = params["start"]
    expected = None
    rng = ranges.get(station)
    if start == "begin":
        if rng is None:
            raise ValueError("--start begin: %s not in INFO STATIONS" % station)
        start = "%06X" % rng[0]
    if rng is not None and not params["select"] and start != "next":
        begin, end = rng
        if start == "ALL":
            expected = proto.held_records(begin, end)
        else:
            seq = int(start, 16)
            if proto.held_records(begin, seq) <= proto.held_records(begin, end):
                expected = proto.held_records(seq, end)
        if params["records"]:
            expected = min(expected, params["records"])
    return station, start, expected


class Target:
    """One server to measure: its address, PID, feed, and the process if
    the harness started it."""

    def __init__(self, label, addr, pid=None, feed=None, server=None):
        self.label, self.addr, self.pid, self.feed, self.server = label, addr, pid, feed, server

    def station(self, params, scenario):
        if params["station"]:
            return params["station"]
        kind = self.feed[0] if self.feed else "plugin"
        key = ("raw_" if kind == "raw" else "") + scenario
        return servers.STATIONS[key]


def _feed_for(spec_text, server):
    """A feed spec word or full spec for one server -> parse_feed tuple."""
    if spec_text in (None, "plugin", "raw", "datalink"):
        if server is None:
            raise ValueError("give --feed plugin:FIFO, raw:HOST:PORT or datalink:HOST:PORT "
                             "for a server the harness did not start")
        spec_text = server.feed(spec_text)
    return latency.parse_feed(spec_text)


def make_targets(params, say, out):
    """Start the servers to start; one Target per server, in order, into
    `out` (as they start: a failure later still lets the caller stop them)."""
    feeds = _split_list(params["feed"], str) or [None]
    addrs = [proto.hostport(t) for t in params["targets"]]
    if params["specs"]:
        unplaced = iter(addrs)
        for i, spec in enumerate(params["specs"]):
            work = (os.path.join(params["work_dir"], "%d-%s" % (i, spec.kind))
                    if params["work_dir"] else None)
            addr = None if spec.generated else next(unplaced)
            say("starting %s: %s" % (spec.kind, spec.cmd))
            server = servers.ManagedServer(spec, work=work, addr=addr)
            out.append(Target("%s:%d (%s)" % (server.addr + (spec.label,)), server.addr,
                              server.pid, server=server))
    else:
        pids = params["server_pid"] or [None] * len(addrs)
        out.extend(Target(t, a, p) for t, a, p in zip(params["targets"], addrs, pids))
    if params["scenario"] in ("latency", "ingest") or params["preload"]:
        if len(feeds) not in (1, len(out)):
            raise ValueError("--feed: give one spec, or one per server")
        for i, t in enumerate(out):
            text = feeds[i] if len(feeds) > 1 else feeds[0]
            if params["raw_port"] and text in (None, "raw"):
                text = "raw:%s:%d" % (t.addr[0], params["raw_port"])
            t.feed = _feed_for(text, t.server)


def run_once(scenario, target, row, params):
    addr, pid = target.addr, target.pid
    if scenario == "fanout":
        station, start, expected = resolve(addr, params)
        return scenarios.run_fanout(
            addr, row, station, start, select=params["select"], records=params["records"],
            expected=expected, duration=params["duration"], workers=params["workers"],
            server_pid=pid, timeout=params["timeout"])
    if scenario == "handshake":
        station, start, _ = resolve(addr, params)
        return scenarios.run_handshake(
            addr, row, station, start, select=params["select"], rounds=params["rounds"],
            duration=params["duration"], server_pid=pid, timeout=params["timeout"])
    if scenario == "latency":
        return latency.run_latency(addr, target.feed, target.station(params, scenario), row,
                                   count=params["count"], rate=params["rate"][0],
                                   server_pid=pid, timeout=params["timeout"])
    if scenario == "ingest":
        raw = {"channels": params["raw_channels"], "sample_rate": params["sample_rate"],
               "seconds": params["data_seconds"], "packet_ms": params["packet_ms"]}
        return ingest.run_ingest(addr, target.feed, target.station(params, scenario),
                                 count=params["count"], rate=row, readers=params["clients"][0],
                                 server_pid=pid, timeout=params["timeout"], raw=raw,
                                 duration=max(params["duration"], 60.0))
    return scenarios.run_idle(addr, row, duration=params["duration"], server_pid=pid,
                              timeout=min(params["timeout"], 5.0))


def summarize(runs):
    """{key: {median, min, max}} over the numeric figures of the counted runs."""
    out = {}
    keys = [k for k in runs[0] if k not in ("clients", "rate")] if runs else []
    for key in keys:
        vals = [r.get(key) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def run_failed(scenario, result):
    if result.get("error"):
        return True
    if scenario == "fanout":
        return bool((result["gaps"] and result["contiguous_expected"]) or result["repeats"]
                    or result["client_errors"]
                    or result["complete_clients"] < result["clients"])
    if scenario == "handshake":
        return result["failures"] > 0
    if scenario == "latency":
        return bool(result["lost"] or result["duplicates"])
    if scenario == "ingest":
        stored_bad = result.get("stored") is not None and "records" in result \
            and result["stored"] != result["records"]
        return bool(result["lost"] or result["gaps"] or result["repeats"] or stored_bad
                    or result["complete_readers"] < result["readers"]
                    or result.get("acked") is False)
    return False


def _preload(targets, params, say):
    n = params["preload"]
    if n is None and params["scenario"] in ("fanout", "handshake") \
            and all(t.server for t in targets):
        n = DEFAULT_PRELOAD
    for t in targets:
        if not n:
            return
        feed = t.feed or _feed_for(None, t.server)
        if feed[0] == "raw":
            raise ValueError("--preload writes records: it needs a plugin or DataLink feed")
        station = params["station"] or servers.STATIONS["ingest"]
        if params["scenario"] in ("fanout", "handshake"):
            params["station"] = station     # read it (INFO may not list it: ringserver)
        say("preloading %d records into %s of %s" % (n, station, t.label))
        ingest.preload(t.addr, feed, station, n, params["timeout"])


def run(args):
    if args.scenario == "suite":
        return run_suite(args)
    if args.scenario == "setup":
        return run_setup(args)
    try:
        params = load_params(args)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print("seedlink-fast bench: %s" % exc, file=sys.stderr)
        return 2
    scenario = params["scenario"]
    rows = params["rate"] if scenario == "ingest" else params["clients"]
    nruns = len(rows) * (params["warmup"] + params["repeat"]) * \
        (len(params["specs"]) or len(params["targets"]))
    progress = report.Progress(nruns, bar=not args.quiet and (args.progress or sys.stderr.isatty()),
                               quiet=args.quiet)
    targets = []
    try:
        make_targets(params, progress.message, targets)
        _preload(targets, params, progress.message)
        doc = run_all(params, targets, rows, progress)
    except (ValueError, OSError, RuntimeError, TimeoutError) as exc:
        progress.close()
        print("seedlink-fast bench: %s" % exc, file=sys.stderr)
        return 2
    finally:
        started = [t for t in targets if t.server]
        stopped = {t.label: t.server.stop() for t in started}
    progress.close()
    doc["servers"] = [dict(target=t.label, kind=t.server.spec.kind, argv=t.server.argv,
                           pid=t.pid, work=t.server.work, listen_seconds=t.server.listen_seconds,
                           **stopped[t.label]) for t in started]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=str)
            fh.write("\n")
    if args.markdown or not args.json:
        print(report.markdown(doc))
    if args.plot:
        files, message = report.plot(doc, args.plot)
        print("seedlink-fast bench: %s" % message, file=sys.stderr)
    return 0 if doc["ok"] else 1


def run_all(params, targets, rows, progress):
    """Warm-up and counted runs per row, interleaved over the servers."""
    scenario = params["scenario"]
    key = report.row_key(scenario)
    results = []
    failed = False
    for row in rows:
        entries = [{"target": t.label, key: row, "warmup": [], "runs": []} for t in targets]
        if key == "rate":
            entries = [dict(e, clients=params["clients"][0]) for e in entries]
        for i in range(params["warmup"] + params["repeat"]):
            counted = i >= params["warmup"]
            for entry, target in zip(entries, targets):   # interleaved A B A B
                progress.start("%s %s %s=%g %s" % (scenario, entry["target"], key, row,
                                                    "run" if counted else "warm-up"))
                started = round(time.time(), 3)
                try:
                    res = run_once(scenario, target, row, params)
                except (ValueError, OSError, RuntimeError, TimeoutError) as exc:
                    res = {key: row, "error": ["%s: %s" % (type(exc).__name__, exc)]}
                res["started"] = started
                if target.pid:
                    res["server_vmhwm_kb"] = procfs.proc_status_kb(target.pid, "VmHWM")
                bad = run_failed(scenario, res)
                failed = failed or bad
                (entry["runs"] if counted else entry["warmup"]).append(res)
                progress.finish(" FAILED %s" % (res.get("error") or "") if bad else "")
        for entry in entries:
            entry["summary"] = summarize([r for r in entry["runs"] if not r.get("error")])
        for entry in entries[1:]:
            entry["ratio_to_first"] = report.ratios(scenario, entries[0], entry)
        results.extend(entries)
    skip = ("compare", "specs")
    return {"scenario": scenario, "environment": environment(),
            "parameters": {k: v for k, v in params.items() if k not in skip},
            "results": results, "ok": not failed}


def run_setup(args):
    """Write seedlink.ini, ring.conf and the feeder FIFO into --work-dir."""
    if not args.work_dir:
        print("seedlink-fast bench setup: give --work-dir DIR", file=sys.stderr)
        return 2
    v = servers.write_setup(args.work_dir)
    py = v["python"]
    print("""wrote %(ini)s (ours and SeisComP), %(ringconf)s (ringserver), FIFO %(fifo)s
ports: SeedLink %(port)d, raw ingest %(raw_port)d, DataLink (ringserver) %(datalink_port)d

start one server:
  seedlink-fast serve -f %(ini)s --bind 127.0.0.1
  seedlink -f %(ini)s                      # SeisComP
  ringserver %(ringconf)s                  # ringserver
then, for example (PID: the server's process id):
  seedlink-fast bench latency --seedlink 127.0.0.1:%(port)d --feed plugin:%(fifo)s \\
      --server-pid PID
  seedlink-fast bench latency --seedlink 127.0.0.1:%(port)d --raw-port %(raw_port)d
  seedlink-fast bench ingest --seedlink 127.0.0.1:%(port)d \\
      --feed datalink:127.0.0.1:%(datalink_port)d                  # ringserver
The plugin is %(py)s -m seedlink_fast.benchtool.feeder;
stations: XX.LAT, XX.ING (plugin or DataLink), XX.RAWL, XX.RAWI (raw port)."""
          % dict(v, py=py))
    return 0


def run_suite(args):
    """bench/suite.py of the source tree this package was installed from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    suite = os.path.join(root, "bench", "suite.py")
    if not os.path.isfile(suite):
        print("seedlink-fast bench suite: %s not found (the suite runs from a source "
              "checkout: python -m bench)" % suite, file=sys.stderr)
        return 2
    argv = [sys.executable, suite]
    if args.quick:
        argv.append("--quick")
    if args.only:
        argv += ["--only", args.only]
    if args.no_readme:
        argv.append("--no-readme")
    if args.json:
        argv += ["--json", args.json]
    return subprocess.call(argv, cwd=root)


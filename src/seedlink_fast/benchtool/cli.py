"""``seedlink-fast bench SCENARIO --seedlink HOST:PORT ...``

SCENARIO is a name (fanout, handshake, idle) or the path of a TOML file
with the same parameters (``scenario = "fanout"``, ``clients = [10]``,
...); command-line flags override the file.
"""
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
import tomllib

from .. import __version__
from . import proto, scenarios

SCENARIOS = ("fanout", "handshake", "idle")
DEFAULTS = {
    "clients": None, "protocol": 3, "start": "ALL", "station": None, "select": None,
    "records": 0, "duration": 30.0, "repeat": 3, "warmup": 1, "rounds": 50, "workers": None,
    "timeout": 10.0, "server_pid": None, "compare": None, "seedlink": None,
}
DEFAULT_CLIENTS = {"fanout": [10], "handshake": [1], "idle": [100]}
# the figure each scenario is judged by (ratios in --compare)
KEY_METRICS = {
    "fanout": ["records_per_s", "MB_per_s", "client_records_per_s_median",
               "server_cpu_us_per_record"],
    "handshake": ["HELLO_ms_median", "STATION_ms_median", "FETCH_ms_median", "DATA_ms_median",
                  "rounds_per_s"],
    "idle": ["held", "server_kb_per_connection"],
}
TABLE_COLUMNS = {
    "fanout": ["records_per_s", "MB_per_s", "client_records_per_s_min",
               "client_records_per_s_median", "client_records_per_s_max", "records_per_client_max",
               "complete_clients", "gaps", "repeats", "server_cpu_us_per_record"],
    "handshake": ["connect_ms_median", "HELLO_ms_median", "HELLO_ms_p99", "STATION_ms_median",
                  "STATION_ms_p99", "SELECT_ms_median", "FETCH_ms_median", "FETCH_ms_p99",
                  "DATA_ms_median", "DATA_ms_p99", "rounds_per_s", "failures"],
    "idle": ["held", "failures", "probed_alive", "open_seconds", "server_kb_per_connection"],
}


def add_subparser(sub):
    p = sub.add_parser(
        "bench", help="load generator / benchmark for any SeedLink 3 server",
        description="Measure a SeedLink server by address. SCENARIO: "
                    + ", ".join(SCENARIOS) + ", or a TOML scenario file.")
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--seedlink", metavar="HOST:PORT", help="the server to measure")
    p.add_argument("--compare", metavar="HOST:PORT,HOST:PORT",
                   help="run against each server, interleaved A B A B, and report ratios")
    p.add_argument("--clients", metavar="N[,N...]",
                   help="clients (fanout), concurrent handshakers, idle connections to try")
    p.add_argument("--protocol", type=int, choices=(3, 4), help="SeedLink protocol (3 only so far)")
    p.add_argument("--start", metavar="ALL|SEQ|next|begin",
                   help="ALL: FETCH ALL (oldest); SEQ (hex): FETCH SEQ; begin: FETCH the "
                        "station's begin_seq from INFO STATIONS; next: DATA (real time)")
    p.add_argument("--station", metavar="NET.STA",
                   help="station (default: the one with most records in INFO STATIONS)")
    p.add_argument("--select", metavar="PAT[,PAT]", help="SELECT patterns, e.g. HHZ.D")
    p.add_argument("--records", type=int, metavar="N",
                   help="fanout: stop each client after N records (0: until END)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="time bound of one run (the listening time for --start next)")
    p.add_argument("--repeat", type=int, metavar="R", help="counted runs (default 3)")
    p.add_argument("--warmup", type=int, metavar="W", help="uncounted runs first (default 1)")
    p.add_argument("--rounds", type=int, help="handshake: connections per client (default 50)")
    p.add_argument("--workers", type=int, help="fanout: client processes")
    p.add_argument("--timeout", type=float, help="reply timeout, seconds")
    p.add_argument("--server-pid", metavar="PID[,PID]",
                   help="server process(es) whose CPU time / RSS to read from /proc "
                        "(one per --compare address)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


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
    clients = params["clients"]
    if clients is None:
        clients = DEFAULT_CLIENTS[scenario]
    elif isinstance(clients, str):
        clients = [int(x) for x in clients.split(",") if x.strip()]
    elif isinstance(clients, int):
        clients = [clients]
    params["clients"] = [int(c) for c in clients]
    if any(c < 1 for c in params["clients"]):
        raise ValueError("--clients must be positive")
    if scenario == "idle" and args.warmup is None and "warmup" not in file_keys:
        params["warmup"] = 0     # an idle run is its own warm-up
    targets = params["compare"] or params["seedlink"]
    if not targets:
        raise ValueError("give --seedlink HOST:PORT or --compare HOST:PORT,HOST:PORT")
    if isinstance(targets, str):
        targets = [t for t in targets.split(",") if t.strip()]
    params["targets"] = list(targets)
    pids = params["server_pid"]
    if isinstance(pids, (str, int)):
        pids = [int(p) for p in str(pids).split(",") if p.strip()]
    pids = list(pids or [])
    if pids and len(pids) != len(targets):
        raise ValueError("--server-pid needs one PID per server (%d given for %d)"
                         % (len(pids), len(targets)))
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
    return {"tool": "seedlink-fast bench %s" % __version__, "python": platform.python_version(),
            "platform": platform.platform(), "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(), "cpu_model": model,
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


def run_once(scenario, addr, nclients, params, pid):
    if scenario == "fanout":
        station, start, expected = resolve(addr, params)
        return scenarios.run_fanout(
            addr, nclients, station, start, select=params["select"], records=params["records"],
            expected=expected, duration=params["duration"], workers=params["workers"],
            server_pid=pid, timeout=params["timeout"])
    if scenario == "handshake":
        station, start, _ = resolve(addr, params)
        return scenarios.run_handshake(
            addr, nclients, station, start, select=params["select"], rounds=params["rounds"],
            duration=params["duration"], server_pid=pid, timeout=params["timeout"])
    return scenarios.run_idle(addr, nclients, duration=params["duration"], server_pid=pid,
                              timeout=min(params["timeout"], 5.0))


def summarize(runs):
    """{key: {median, min, max}} over the numeric figures of the counted runs."""
    out = {}
    keys = [k for k in runs[0] if k != "clients"] if runs else []
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
    return False


def run(args):
    try:
        params = load_params(args)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print("seedlink-fast bench: %s" % exc, file=sys.stderr)
        return 2
    scenario = params["scenario"]
    targets = params["targets"]
    addrs = [proto.hostport(t) for t in targets]
    pids = params["server_pid"] or [None] * len(targets)
    say = (lambda *a: None) if args.quiet else (
        lambda *a: print("bench:", *a, file=sys.stderr, flush=True))
    results = []
    failed = False
    total_runs = len(params["clients"]) * (params["warmup"] + params["repeat"]) * len(targets)
    done = 0
    for nclients in params["clients"]:
        entries = [{"target": t, "clients": nclients, "warmup": [], "runs": []} for t in targets]
        for i in range(params["warmup"] + params["repeat"]):
            counted = i >= params["warmup"]
            for entry, addr, pid in zip(entries, addrs, pids):   # interleaved A B A B
                t0 = time.monotonic()
                try:
                    res = run_once(scenario, addr, nclients, params, pid)
                except (ValueError, OSError, RuntimeError) as exc:
                    res = {"clients": nclients, "error": ["%s: %s" % (type(exc).__name__, exc)]}
                done += 1
                bad = run_failed(scenario, res)
                failed = failed or bad
                (entry["runs"] if counted else entry["warmup"]).append(res)
                say("[%d/%d] %s %s N=%d %s%s %.2fs" % (
                    done, total_runs, scenario, entry["target"], nclients,
                    "run" if counted else "warm-up", " FAILED %s" % (res.get("error") or "")
                    if bad else "", time.monotonic() - t0))
        for entry in entries:
            entry["summary"] = summarize([r for r in entry["runs"] if not r.get("error")])
        if len(entries) > 1:
            for entry in entries[1:]:
                entry["ratio_to_first"] = ratios(scenario, entries[0], entry)
        results.extend(entries)
    report = {"scenario": scenario, "environment": environment(),
              "parameters": {k: v for k, v in params.items() if k != "compare"},
              "results": results, "ok": not failed}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
            fh.write("\n")
    table = markdown(report)
    if args.markdown or not args.json:
        print(table)
    return 1 if failed else 0


def ratios(scenario, first, other):
    """Key figures of `other` / `first`: the median of the per-pair ratios
    (run k of A against run k of B) and the min/max of those."""
    out = {}
    for key in KEY_METRICS[scenario]:
        pairs = [(b.get(key), a.get(key)) for a, b in zip(first["runs"], other["runs"])]
        vals = [b / a for b, a in pairs if isinstance(a, (int, float)) and isinstance(b, (int, float))
                and a]
        if vals:
            out[key] = {"median": round(statistics.median(vals), 4),
                        "min": round(min(vals), 4), "max": round(max(vals), 4)}
    return out


def _fmt(cell):
    if cell is None:
        return "-"
    med, lo, hi = cell["median"], cell["min"], cell["max"]
    if lo == hi:
        return "%g" % round(med, 3)
    return "%g (%g–%g)" % (round(med, 3), round(lo, 3), round(hi, 3))


def markdown(report):
    scenario = report["scenario"]
    cols = [c for c in TABLE_COLUMNS[scenario]
            if any(c in e["summary"] for e in report["results"])]
    lines = ["### %s — median (min–max) of %d run(s)" % (
        scenario, report["parameters"]["repeat"]), "",
        "| server | N | " + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols)]
    for e in report["results"]:
        lines.append("| %s | %d | %s |" % (e["target"], e["clients"],
                                           " | ".join(_fmt(e["summary"].get(c)) for c in cols)))
    for e in report["results"]:
        errors = [err for r in e["warmup"] + e["runs"] for err in (r.get("error") or [])]
        if errors:
            lines.append("")
            lines.append("%s N=%d: %d failed run(s): %s" % (e["target"], e["clients"],
                                                             len(errors), errors[0]))
    ratio_rows = [e for e in report["results"] if e.get("ratio_to_first")]
    if ratio_rows:
        keys = KEY_METRICS[scenario]
        keys = [k for k in keys if any(k in e["ratio_to_first"] for e in ratio_rows)]
        first = {e["clients"]: e["target"] for e in report["results"] if "ratio_to_first" not in e}
        lines += ["", "Ratios (server / %s, median of A/B run pairs):" % ", ".join(
            sorted(set(first.values()))), "",
            "| server | N | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
        for e in ratio_rows:
            lines.append("| %s | %d | %s |" % (e["target"], e["clients"], " | ".join(
                _fmt(e["ratio_to_first"].get(k)) for k in keys)))
    return "\n".join(lines)

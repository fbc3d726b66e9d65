#!/usr/bin/env python3
"""The benchmark suite: every component benchmark with short settings under
one runner, every target with PASS/MISS, and the results written into
bench/README.md (between the ``bench-suite`` markers; the rest of the file
is left as it is).

Components (each a subprocess writing --json; its output goes to a log):

  mseed             bench_mseed.py             Steim2 encode/decode vs libmseed, obspy
  fir               bench_fir.py               FirDecimator vs scipy upfirdn
  stream_processor  bench_stream_processor.py  FIR trees + Steim2 vs the SeisComP anchors
  server            bench_server.py            fan-out, latency, handshake, idle
  raw_ingest        bench_raw_ingest.py        16 x 1 MHz push into the server
  harness           seedlink-fast bench        latency (raw port), ingest (plugin, raw)

The targets are the ones each script judges itself by (bench_mseed.py,
bench_stream_processor.py, bench_raw_ingest.py, bench_server.py's verdict
column); bench_fir.py has none, so the suite takes three from
shared/docs/performance-anchors.md §3 (marked "suite").  "info" rows have
no target.

Usage:
  python -m bench [--quick] [--only mseed,fir] [--no-readme] [--json FILE]
  seedlink-fast bench suite [--quick] ...
--quick takes about 2 minutes on the 2-core machine, a full run about 10.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _util  # noqa: E402

README = os.path.join(HERE, "README.md")
BEGIN = "<!-- bench-suite:begin (written by `python -m bench`; edits here are overwritten) -->"
END = "<!-- bench-suite:end -->"

# component: (script or None, quick args, full args, time limit quick/full in s)
COMPONENTS = {
    "mseed": ("bench_mseed.py", ["--quick"], ["--max-seconds", "60"], (90, 300)),
    "fir": ("bench_fir.py", ["--quick"], [], (60, 180)),
    "stream_processor": ("bench_stream_processor.py",
                         ["--quick", "--reps", "3", "--max-seconds", "20"],
                         ["--quick", "--reps", "5", "--max-seconds", "60"], (150, 400)),
    "server": ("bench_server.py", ["--quick"],
               ["--records", "300000", "--fanout-budget", "3000000", "--latency-count", "1000"],
               (150, 400)),
    "raw_ingest": ("bench_raw_ingest.py", ["--quick", "--reps", "1"], ["--reps", "2"], (90, 300)),
    "harness": (None, [], [], (120, 300)),
}

# FIR targets (bench_fir.py has no verdicts): from performance-anchors.md §3
FIR_C_DECIMATOR_OUT = 52.8e6        # measured vectorised C FIR decimator, D=2, outputs/s


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def verdict(ok):
    return "PASS" if ok else "MISS"


def spread_text(med, lo, hi, fmt="%.2f", unit=""):
    return (fmt + "%s [" + fmt + "–" + fmt + "]") % (med, unit, lo, hi)


# -- target rows from each component's JSON ---------------------------------------------

def rows_mseed(doc):
    return [("%s %s: %s ≥ %.1f× %s" % (t["kind"], t["data"], t["method"], t["target"],
                                       t["reference"]),
             spread_text(t["median"], t["min"], t["max"], unit="×"), verdict(t["pass"]))
            for t in doc["targets"]]


def rows_fir(doc):
    cases = doc["cases"]
    rows = []
    d2 = cases.get("FirDecimator i32 D=2 B=400")
    if d2:
        rows.append(("D=2, int32, 400-sample blocks ≥ %.1f M out/s (the anchors' vectorised C "
                     "decimator; suite)" % (FIR_C_DECIMATOR_OUT / 1e6),
                     "%.1f M out/s" % (d2["out_per_s"] / 1e6),
                     verdict(d2["out_per_s"] >= FIR_C_DECIMATOR_OUT)))
    for d in (2, 5):
        ours, whole = cases.get("FirDecimator i32 D=%d B=400" % d), cases.get(
            "upfirdn_whole f64 D=%d" % d)
        if ours and whole:
            ratio = ours["in_per_s"] / whole["in_per_s"]
            rows.append(("D=%d streaming in 400-sample blocks ≥ 1.0× one scipy upfirdn call on "
                         "the whole array (suite)" % d,
                         "%.2f× (%.0f vs %.0f M in/s)" % (ratio, ours["in_per_s"] / 1e6,
                                                         whole["in_per_s"] / 1e6),
                         verdict(ratio >= 1.0)))
    return rows


def rows_stream_processor(doc):
    rows = []
    for name, s in doc["summary"].items():
        t = s["target"]
        med, lo, hi = s["ours_samples_per_s"]
        rows.append(("%s ≥ %.1f M input samples/s (%g× SeisComP; %s)" % (
            name, t["rate"] / 1e6, t["factor"], s["seiscomp_source"]),
            "%s (%.2f× SeisComP)" % (spread_text(med / 1e6, lo / 1e6, hi / 1e6, unit=" M/s"),
                                      s["ratio_vs_seiscomp"][0]),
            verdict(t["pass"])))
    return rows


def rows_server(doc):
    """bench_server.py's own table, its verdict column kept."""
    import bench_server

    rows = []
    for line in bench_server.markdown(doc).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) >= 4 and cells[3] in ("PASS", "MISS", "info", "calibration"):
            what = cells[0] if cells[2] in ("", "—") else "%s: %s" % (cells[0], cells[2])
            rows.append((what, cells[1], "info" if cells[3] == "calibration" else cells[3]))
    return rows


def rows_raw_ingest(doc):
    rows = []
    for name, s in doc["summary"].items():
        if name == "realtime-16x1M":
            rows.append(("16 × 1 MHz in real time: no loss, server < 1 core",
                         "%.2f M samples/s, server %.2f cores, %s" % (
                             s["samples_per_s"] / 1e6, s["server_cores"],
                             "no loss" if s["no_loss"] else "LOSS"),
                         verdict(s["no_loss"] and s["server_cores"] < 1.0)))
        else:
            rows.append(("%s (as fast as possible)" % name,
                         "%.2f M samples/s, server %.2f cores, headroom %.1f×, %s" % (
                             s["samples_per_s"] / 1e6, s["server_cores"], s["headroom"],
                             "no loss" if s["no_loss"] else "LOSS"), "info"))
    return rows


# -- the harness component: seedlink-fast bench against a server it starts -------------

def harness_runs(quick):
    reps = ["--repeat", "1", "--warmup", "0"] if quick else ["--repeat", "3", "--warmup", "1"]
    common = ["--server-cmd", "ours", "-q"] + reps
    return {
        "latency-raw": ["latency", "--feed", "raw", "--count", "300" if quick else "1000",
                        "--rate", "100"] + common,
        "ingest-plugin": ["ingest", "--feed", "plugin", "--count",
                          "50000" if quick else "200000"] + common,
        "ingest-raw": ["ingest", "--feed", "raw", "--data-seconds", "2"] + common,
    }


def run_harness(quick, outdir, limit):
    docs, problems = {}, []
    for name, argv in harness_runs(quick).items():
        path = os.path.join(outdir, "harness-%s.json" % name)
        cmd = [sys.executable, "-m", "seedlink_fast", "bench"] + argv + ["--json", path]
        with open(os.path.join(outdir, "harness-%s.log" % name), "wb") as fh:
            try:
                rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=limit)
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if os.path.exists(path):
            with open(path) as fh:
                docs[name] = json.load(fh)
        if rc != 0:
            problems.append("%s: rc=%s" % (name, rc))
    return docs, problems


def rows_harness(docs):
    rows = []
    lat = docs.get("latency-raw")
    if lat and lat["results"][0]["summary"].get("median_ms"):
        s = lat["results"][0]["summary"]
        run0 = lat["results"][0]["runs"][0]
        rows.append(("latency, raw ingest port → 1 real-time client, %g rec/s: median < 1 ms, "
                     "first 10 ≤ 2 ms (seiscomp-perf §5)" % run0["rate"],
                     "median %.3f ms, p99 %.3f, max %.3f, first 10 max %.3f; %d/%d received" % (
                         s["median_ms"]["median"], s["p99_ms"]["median"], s["max_ms"]["median"],
                         s["first10_max_ms"]["median"], run0["received"], run0["expected"]),
                     verdict(s["median_ms"]["median"] < 1.0
                             and s["first10_max_ms"]["median"] <= 2.0 and lat["ok"])))
    for name, what in (("ingest-plugin", "ingest, feeder plugin (type 13 → fd 63), as fast as "
                                         "possible"),
                       ("ingest-raw", "ingest, raw port 16 × 1 MHz (Streamer), as fast as "
                                      "possible")):
        doc = docs.get(name)
        if not doc or not doc["results"][0]["summary"]:
            continue
        s = doc["results"][0]["summary"]
        text = "%.0f k rec/s" % (s["records_per_s"]["median"] / 1e3)
        if "samples_per_s" in s:
            text += ", %.1f M samples/s" % (s["samples_per_s"]["median"] / 1e6)
        text += ", %.2f µs server CPU/rec, lost %d" % (
            s["server_cpu_us_per_record"]["median"], s["lost"]["max"])
        rows.append((what, text, "info" if doc["ok"] else "MISS"))
    return rows


ROWS = {"mseed": rows_mseed, "fir": rows_fir, "stream_processor": rows_stream_processor,
        "server": rows_server, "raw_ingest": rows_raw_ingest}


def run_component(name, quick, outdir):
    script, qargs, fargs, limits = COMPONENTS[name]
    limit = limits[0] if quick else limits[1]
    t0 = time.monotonic()
    if script is None:
        docs, problems = run_harness(quick, outdir, limit)
        rows = rows_harness(docs)
        return {"name": name, "seconds": round(time.monotonic() - t0, 1), "rows": rows,
                "error": "; ".join(problems) or None, "json": docs}
    path = os.path.join(outdir, name + ".json")
    logpath = os.path.join(outdir, name + ".log")
    cmd = [sys.executable, os.path.join(HERE, script)] + (qargs if quick else fargs) + \
        ["--json", path]
    with open(logpath, "wb") as fh:
        try:
            rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                 timeout=limit)
        except subprocess.TimeoutExpired:
            rc = "timeout after %d s" % limit
    out = {"name": name, "cmd": cmd, "seconds": round(time.monotonic() - t0, 1), "rows": [],
           "error": None}
    doc = None
    if os.path.exists(path):
        with open(path) as fh:
            doc = json.load(fh)
        try:
            out["rows"] = ROWS[name](doc)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            out["error"] = "could not read its results: %r" % exc
    out["json"] = doc
    if rc != 0:
        with open(logpath, "rb") as fh:
            tail = fh.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        out["error"] = "rc=%s: %s" % (rc, " / ".join(tail))
    return out


# -- output ----------------------------------------------------------------------------------

def table(results):
    lines = ["| component | target / measure | measured | result |", "|---|---|---|---|"]
    for r in results:
        for what, got, result in r["rows"]:
            lines.append("| %s | %s | %s | %s |" % (r["name"], what, got.replace("|", "/"),
                                                     result))
        if r["error"]:
            lines.append("| %s | (the run) | %s | ERROR |" % (r["name"], r["error"][:300]))
    return "\n".join(lines)


def section(results, env, quick, seconds):
    counts = {}
    for r in results:
        for _, _, result in r["rows"]:
            counts[result] = counts.get(result, 0) + 1
        if r["error"]:
            counts["ERROR"] = counts.get("ERROR", 0) + 1
    git = env["git"]
    return "\n".join([
        BEGIN,
        "## Suite results",
        "",
        "Written by `python -m bench%s` on %s: git %s%s, %s × %s, Python %s, numpy %s. "
        "Total %.0f s; %s.  Per component: %s.  Targets are each script's own "
        "(\"suite\": set by bench/suite.py from the anchors); \"info\" rows have none.  "
        "One short run on a shared 2-vCPU machine: read the component tables above for "
        "repeated, quiet-gated figures." % (
            " --quick" if quick else "", env["time"], git["sha"][:12],
            " (dirty)" if git["dirty"] else "", env["cpu_model"], env["cpu_count"],
            env["python"], env["numpy"], seconds,
            ", ".join("%d %s" % (n, k) for k, n in sorted(counts.items())),
            ", ".join("%s %.0f s" % (r["name"], r["seconds"]) for r in results)),
        "",
        table(results),
        END,
    ])


def write_readme(text, path=README):
    with open(path) as fh:
        old = fh.read()
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as fh:
        fh.write(new)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short settings (~2 minutes)")
    ap.add_argument("--only", help="comma-separated components: " + ", ".join(COMPONENTS))
    ap.add_argument("--no-readme", action="store_true", help="do not touch bench/README.md")
    ap.add_argument("--json", metavar="FILE", help="all results and parsed rows")
    ap.add_argument("--keep", metavar="DIR", help="keep each component's JSON and log here")
    args = ap.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(COMPONENTS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        ap.error("unknown component(s) %s (choose from %s)" % (", ".join(unknown),
                                                                 ", ".join(COMPONENTS)))
    env = _util.environment(REPO, {"time": datetime.datetime.now(datetime.timezone.utc)
                                   .strftime("%Y-%m-%d %H:%M UTC")})
    outdir = args.keep or tempfile.mkdtemp(prefix="bench-suite-")
    os.makedirs(outdir, exist_ok=True)
    t0 = time.monotonic()
    results = []
    try:
        for name in names:
            log("%s ..." % name)
            r = run_component(name, args.quick, outdir)
            results.append(r)
            log("%s: %.0f s, %s%s" % (name, r["seconds"], ", ".join(x[2] for x in r["rows"]),
                                      " ERROR %s" % r["error"] if r["error"] else ""))
    finally:
        if not args.keep:
            shutil.rmtree(outdir, ignore_errors=True)
    seconds = time.monotonic() - t0
    text = section(results, env, args.quick, seconds)
    print(text)
    if not args.no_readme and set(names) == set(COMPONENTS):
        write_readme(text)
        log("wrote the results into %s" % README)
    elif not args.no_readme:
        log("--only: bench/README.md left as it is (it holds full-suite results)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "quick": args.quick, "seconds": seconds,
                       "components": results}, fh, indent=1, default=str)
    bad = any(r["error"] or any(x[2] in ("MISS", "ERROR") for x in r["rows"]) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

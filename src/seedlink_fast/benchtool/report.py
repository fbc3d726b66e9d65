"""Output of ``seedlink-fast bench``: the Markdown table, ratios of
--compare, PNG plots (matplotlib, optional) and the progress bar."""
import os
import statistics
import sys
import threading
import time

# the figures each scenario is judged by (ratios in --compare)
KEY_METRICS = {
    "fanout": ["records_per_s", "MB_per_s", "client_records_per_s_median",
               "server_cpu_us_per_record"],
    "handshake": ["HELLO_ms_median", "STATION_ms_median", "FETCH_ms_median", "DATA_ms_median",
                  "rounds_per_s"],
    "idle": ["held", "server_kb_per_connection"],
    "latency": ["median_ms", "p90_ms", "p99_ms", "max_ms", "server_cpu_us_per_record"],
    "ingest": ["records_per_s", "samples_per_s", "lag_s", "server_cpu_us_per_record"],
}
TABLE_COLUMNS = {
    "fanout": ["records_per_s", "MB_per_s", "client_records_per_s_min",
               "client_records_per_s_median", "client_records_per_s_max", "records_per_client_max",
               "complete_clients", "gaps", "repeats", "server_cpu_us_per_record"],
    "handshake": ["connect_ms_median", "HELLO_ms_median", "HELLO_ms_p99", "STATION_ms_median",
                  "STATION_ms_p99", "SELECT_ms_median", "FETCH_ms_median", "FETCH_ms_p99",
                  "DATA_ms_median", "DATA_ms_p99", "rounds_per_s", "failures"],
    "idle": ["held", "failures", "probed_alive", "open_seconds", "server_kb_per_connection"],
    "latency": ["received", "lost", "duplicates", "min_ms", "median_ms", "p90_ms", "p99_ms",
                "max_ms", "first10_max_ms", "server_cpu_us_per_record", "children_cpu_s"],
    "ingest": ["records_per_s", "samples_per_s", "write_seconds", "lag_s", "received_min",
               "stored", "lost", "gaps", "repeats", "server_cpu_us_per_record",
               "server_vmhwm_kb"],
}


def row_key(scenario):
    """The column a row varies: offered rate for ingest, else the client count."""
    return "rate" if scenario == "ingest" else "clients"


def ratios(scenario, first, other):
    """Key figures of `other` / `first`: the median of the per-pair ratios
    (run k of A against run k of B) and the min/max of those."""
    out = {}
    for key in KEY_METRICS[scenario]:
        pairs = [(b.get(key), a.get(key)) for a, b in zip(first["runs"], other["runs"])]
        vals = [b / a for b, a in pairs
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a]
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


def _is_raw(entry):
    return any(r.get("feed") == "raw" for r in entry["runs"] + entry["warmup"])


def _key_cell(scenario, entry):
    if scenario == "ingest":
        rate = entry["rate"]
        return "max" if not rate else "%g%s" % (rate, "× real time" if _is_raw(entry) else "")
    return "%d" % entry["clients"]


def markdown(report):
    scenario = report["scenario"]
    head = "rate" if scenario == "ingest" else "N"
    cols = [c for c in TABLE_COLUMNS[scenario]
            if any(c in e["summary"] for e in report["results"])]
    lines = ["### %s — median (min–max) of %d run(s)" % (
        scenario, report["parameters"]["repeat"]), "",
        "| server | %s | " % head + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols)]
    for e in report["results"]:
        lines.append("| %s | %s | %s |" % (e["target"], _key_cell(scenario, e),
                                           " | ".join(_fmt(e["summary"].get(c)) for c in cols)))
    for e in report["results"]:
        errors = [err for r in e["warmup"] + e["runs"] for err in (r.get("error") or [])]
        if errors:
            lines.append("")
            lines.append("%s %s=%s: %d error(s): %s" % (e["target"], head, _key_cell(scenario, e),
                                                       len(errors), errors[0]))
    if scenario == "ingest":
        lines += [""] + sustained_lines(report)
    ratio_rows = [e for e in report["results"] if e.get("ratio_to_first")]
    if ratio_rows:
        keys = [k for k in KEY_METRICS[scenario]
                if any(k in e["ratio_to_first"] for e in ratio_rows)]
        firsts = sorted({e["target"] for e in report["results"] if "ratio_to_first" not in e})
        lines += ["", "Ratios (server / %s, median of A/B run pairs):" % ", ".join(firsts), "",
                  "| server | %s | " % head + " | ".join(keys) + " |",
                  "|---|---:|" + "---:|" * len(keys)]
        for e in ratio_rows:
            lines.append("| %s | %s | %s |" % (e["target"], _key_cell(scenario, e), " | ".join(
                _fmt(e["ratio_to_first"].get(k)) for k in keys)))
    servers = report.get("servers") or []
    if servers:
        lines += ["", "Servers started by the harness:", ""]
        for s in servers:
            peak = (s.get("peak") or {}).get("self")
            lines.append("- %s: `%s` (pid %s, listening after %s s, peak RSS %s MB)" % (
                s["target"], " ".join(s["argv"]), s["pid"], s["listen_seconds"],
                "?" if peak is None else round(peak / 1024, 1)))
    return "\n".join(lines)


def sustained_lines(report, max_lag=1.0):
    """Per server: the highest offered rate kept with no loss and a lag of
    at most `max_lag` s, and what rate 0 (as fast as possible) reached."""
    out = []
    for target in dict.fromkeys(e["target"] for e in report["results"]):
        kept, best, raw = [], None, False
        for e in report["results"]:
            if e["target"] != target or not e["runs"]:
                continue
            raw = _is_raw(e)
            ok = all(not r.get("error") and r.get("lost") == 0 and (r.get("lag_s") or 0) <= max_lag
                     for r in e["runs"])
            if e["rate"] and ok:
                kept.append(e["rate"])
            key = "samples_per_s" if raw else "records_per_s"
            if not e["rate"] and key in e["summary"]:
                best = e["summary"][key]["median"]
        unit = "samples/s" if raw else "records/s"
        parts = []
        if kept:
            parts.append("kept up (no loss, lag ≤ %g s) at %g%s" % (
                max_lag, max(kept), "× real time" if raw else " records/s offered"))
        if best is not None:
            parts.append("as fast as possible: {:,.0f} {}".format(best, unit))
        if parts:
            out.append("%s: %s." % (target, "; ".join(parts)))
    return out


# -- plots --------------------------------------------------------------------------------

def plot(report, outdir):
    """Write PNG plots of `report` into `outdir`; returns (files, message)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install 'seedlink-fast[plot]'): no plots"
    os.makedirs(outdir, exist_ok=True)
    scenario = report["scenario"]
    maker = {"fanout": _plot_fanout, "latency": _plot_latency, "ingest": _plot_ingest,
             "handshake": _plot_handshake}.get(scenario)
    if maker is None:
        return [], "no plot for the %s scenario" % scenario
    files = maker(plt, report, outdir)
    return files, "plots: %s" % ", ".join(files)


def _by_target(report):
    out = {}
    for e in report["results"]:
        out.setdefault(e["target"], []).append(e)
    return out


def _finish(plt, fig, ax, outdir, name, title, xlabel, ylabel):
    """Labels, legend, grid; save as outdir/name; returns the path."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = os.path.join(outdir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(ax, groups, series):
    """Grouped bars: `groups` along x, one bar per (label, {group: value}) series."""
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series):
        ax.bar([i + k * width for i in range(len(groups))],
               [values.get(g, 0) for g in groups], width=width, label=label)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(groups))], groups)


def _plot_fanout(plt, report, outdir):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for target, entries in _by_target(report).items():
        pts = [(e["clients"], e["summary"]["records_per_s"]) for e in entries
               if "records_per_s" in e["summary"]]
        if pts:
            med = [c["median"] for _, c in pts]
            err = [[m - c["min"] for m, (_, c) in zip(med, pts)],
                   [c["max"] - m for m, (_, c) in zip(med, pts)]]
            ax.errorbar([n for n, _ in pts], med, yerr=err, marker="o", capsize=3, label=target)
    ax.set_xscale("log")
    return [_finish(plt, fig, ax, outdir, "fanout-throughput.png", "fan-out throughput",
                    "clients N", "records/s, all clients (median, min–max)")]


def _plot_latency(plt, report, outdir):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for e in report["results"]:
        vals = [v / 1e3 for r in e["runs"] for v in r.get("latencies_us", [])]
        if vals:
            ax.hist(vals, bins=60, histtype="step", label="%s K=%d (median %.3f ms)" % (
                e["target"], e["clients"], statistics.median(vals)))
    ax.set_yscale("log")
    return [_finish(plt, fig, ax, outdir, "latency-histogram.png",
                    "latency histogram, all counted runs",
                    "latency, ms (record into the server → client receipt)", "records")]


def _plot_ingest(plt, report, outdir):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    order = sorted(report["results"], key=lambda e: e["rate"] or float("inf"))
    groups = list(dict.fromkeys(_key_cell("ingest", e) for e in order))
    _bars(ax, groups, [(target, {_key_cell("ingest", e): e["summary"].get(
        "records_per_s", {}).get("median", 0) for e in entries})
        for target, entries in _by_target(report).items()])
    return [_finish(plt, fig, ax, outdir, "ingest-rate.png", "ingest",
                    "offered rate (max: as fast as possible)", "records/s received (median)")]


def _plot_handshake(plt, report, outdir):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmds = ["connect", "HELLO", "STATION", "SELECT", "FETCH", "DATA"]
    _bars(ax, cmds, [("%s N=%d" % (e["target"], e["clients"]),
                      {c: e["summary"].get("%s_ms_median" % c, {}).get("median", 0)
                       for c in cmds}) for e in report["results"]])
    return [_finish(plt, fig, ax, outdir, "handshake-replies.png", "command reply times",
                    "command", "reply time, ms (median)")]


# -- progress -------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr (drawn when `bar`), else one line
    per finished run (unless `quiet`).  A ticker thread keeps the elapsed
    time of the current run moving."""

    WIDTH = 24

    def __init__(self, total, bar=False, quiet=False, stream=None):
        self.total = max(1, total)
        self.bar = bar
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.done = 0
        self.label = ""
        self.t_run = self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if bar:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def _tick(self):
        while not self._stop.wait(0.5):
            self._draw()

    def _draw(self):
        with self._lock:
            fill = self.WIDTH * self.done // self.total
            now = time.monotonic()
            line = "\r[%s%s] %d/%d %s %.1fs (total %.0fs)" % (
                "#" * fill, "." * (self.WIDTH - fill), self.done, self.total, self.label,
                now - self.t_run, now - self.t0)
            self.stream.write(line[:160].ljust(100))
            self.stream.flush()

    def start(self, label):
        self.label = label
        self.t_run = time.monotonic()
        if self.bar:
            self._draw()

    def finish(self, note=""):
        self.done += 1
        seconds = time.monotonic() - self.t_run
        if self.bar:
            self._draw()
        elif not self.quiet:
            print("bench: [%d/%d] %s%s %.2fs" % (self.done, self.total, self.label, note, seconds),
                  file=self.stream, flush=True)

    def message(self, text):
        if self.quiet:
            return
        with self._lock:
            if self.bar:
                self.stream.write("\r" + " " * 100 + "\r")
            print("bench: " + text, file=self.stream, flush=True)
        if self.bar:
            self._draw()

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
            self.stream.write("\n")
            self.stream.flush()

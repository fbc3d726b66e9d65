#!/usr/bin/env python3
"""Steim2 miniSEED 2 encode/decode throughput of seedlink-fast against libmseed
(through pymseed) and obspy.

Data sets (int32, seeded, built as for the performance anchors):

  bb100   1e7 samples, 100 Hz broadband-like: 0.1-0.4 Hz microseism (std 2000)
          + 5 Hz low-passed local noise (std 60) + white noise (std 15)
          + random walk; first differences of about 6 bits
  hr4000  1e7 samples, 4000 Hz digitizer-like in int16 range: noise low-passed
          at 1600 Hz (std 1000) + 50 Hz hum (amplitude 3000), clipped
  worst   4e6 samples, uniform in [-2**28, 2**28): 30-bit differences,
          incompressible (103 samples per 512-byte record)

ENCODE (512-byte records, Steim2), each run packs the whole array:
  pack        seedlink_fast.mseed.pack(): all records, joined into one bytes
  feed4096    RecordPacker.feed() in 4096-sample chunks, then flush(); the
              records are kept as a list of bytes
  libmseed    pymseed MS3Record (formatversion 2) with_datasamples +
              to_file('/dev/null'): libmseed 3's whole pack loop in C, no
              output kept (the "libmseed C" anchor)
  obspy       obspy Stream.write(BytesIO, 'MSEED', encoding='STEIM2',
              reclen=512) (libmseed 2 through ctypes)

DECODE, all of the same 512-byte Steim2 buffer written by libmseed 3 (so
every decoder reads foreign data):
  unpack          seedlink_fast.mseed.unpack(): a list of Record objects, the
                  samples one int32 array per record
  parse_records   seedlink_fast._ext.mseed.parse_records(): the kernel alone
                  (one tuple per record)
  unpack+concat   unpack() plus np.concatenate of the samples (informational)
  pymseed_tl      pymseed MS3TraceList.from_buffer(unpack_data=True): parse
                  and decode all in C, samples as one contiguous array (view)
  obspy           obspy.read(BytesIO)

The methods run interleaved in every repetition (A B C D, A B C D, ...), so
machine noise hits all of them alike.  Ratios are speed ratios (their time /
our time) computed per repetition, then reported as median [min..max].

Noise control: the garbage collector stays on, but gc.collect() runs
(untimed) before every timed call so that each starts from the same GC state.
Before each repetition the benchmark waits (at most --max-wait s) for the
machine to be quiet; it records the CPU time other processes used during the
repetition and the hypervisor's steal time (both in percent of one CPU), and
redoes a repetition above --max-other while attempts and the time budget
allow (then keeps the quietest).  Each run's minor page faults (getrusage)
are recorded too: fresh large allocations fault their pages in, a real and
noisy cost on a VM.

Usage:
  PYTHONPATH=src python bench/bench_mseed.py [--quick] [--reps N]
                                              [--json FILE] [--markdown]
"""

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"   # before numpy/scipy load OpenBLAS

import argparse
import gc
import io
import json
import resource
import statistics
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
try:
    import seedlink_fast
except ImportError:                        # run without PYTHONPATH=src
    sys.path.insert(0, os.path.join(REPO, "src"))
    import seedlink_fast

import _util  # noqa: E402
from seedlink_fast import mseed  # noqa: E402
from seedlink_fast._ext import mseed as mseed_kernel  # noqa: E402

warnings.filterwarnings("ignore")

RECLEN = 512
NET, STA, LOC, CHA = "XX", "ANCH", "00", "HHZ"
SOURCE_ID = "FDSN:XX_ANCH_00_H_H_Z"
START_ISO = "2024-01-01T00:00:00.000000Z"
START_NS = 1_704_067_200 * 1_000_000_000
FEED_CHUNK = 4096

# per data set: sizes (full, --quick), sample rate, RNG seed
FULL_SIZES = {"bb100": 10_000_000, "hr4000": 10_000_000, "worst": 4_000_000}
QUICK_SIZES = {"bb100": 1_000_000, "hr4000": 1_000_000, "worst": 400_000}
RATES = {"bb100": 100.0, "hr4000": 4000.0, "worst": 100.0}
SEEDS = {"bb100": 1, "hr4000": 2, "worst": 3}

# (kind, data set, our method, reference, minimum median speed ratio).
# The decode target compares like with like: pymseed's trace list decodes
# every record into merged sample arrays, our `decode` into one array.
# `unpack` (a Record object per record) is reported beside it.
TARGETS = [
    ("encode", "bb100", "pack", "libmseed", 2.0),
    ("encode", "hr4000", "pack", "libmseed", 1.3),
    ("encode", "worst", "pack", "libmseed", 1.1),
    ("decode", "bb100", "decode", "pymseed_tl", 1.5),
    ("decode", "hr4000", "decode", "pymseed_tl", 1.5),
    ("decode", "worst", "decode", "pymseed_tl", 1.5),
]


# ---------------------------------------------------------------------------
# data

def make_bb100(n, seed):
    """100 Hz broadband-like counts (see the module docstring)."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    fs = RATES["bb100"]
    band = signal.butter(4, [0.1, 0.4], btype="bandpass", fs=fs, output="sos")
    microseism = signal.sosfilt(band, rng.standard_normal(n))
    microseism *= 2000.0 / microseism.std()
    low = signal.butter(2, 5.0, btype="lowpass", fs=fs, output="sos")
    local = signal.sosfilt(low, rng.standard_normal(n))
    local *= 60.0 / local.std()
    white = rng.normal(0.0, 15.0, n)
    walk = np.cumsum(rng.normal(0.0, 0.5, n))
    return np.round(microseism + local + white + walk + 12345.0).astype(np.int32)


def make_hr4000(n, seed):
    """4000 Hz digitizer-like counts in int16 range."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    fs = RATES["hr4000"]
    low = signal.butter(8, 1600.0, btype="lowpass", fs=fs, output="sos")
    noise = signal.sosfilt(low, rng.standard_normal(n))
    noise *= 1000.0 / noise.std()
    hum = 3000.0 * np.sin(2.0 * np.pi * 50.0 * (np.arange(n) / fs))
    return np.clip(np.round(noise + hum), -32768, 32767).astype(np.int32)


def make_worst(n, seed):
    """Uniform in [-2**28, 2**28): every difference needs 30 bits."""
    rng = np.random.default_rng(seed)
    return rng.integers(-(2 ** 28), 2 ** 28, n, dtype=np.int64).astype(np.int32)


MAKERS = {"bb100": make_bb100, "hr4000": make_hr4000, "worst": make_worst}


def difference_bits(x):
    """Median and 99th percentile of the two's-complement bits the first
    differences need."""
    d = np.diff(x.astype(np.int64))
    mag = np.where(d < 0, -d - 1, d)                 # ones' magnitude
    bits = np.floor(np.log2(np.maximum(mag, 1))) + 2
    bits[mag == 0] = 1
    return float(np.median(bits)), float(np.percentile(bits, 99)), float(d.std())


# ---------------------------------------------------------------------------
# encoders: each returns (bytes or None, number of records)

def enc_pack(x, fs):
    out = mseed.pack(x, network=NET, station=STA, location=LOC, channel=CHA,
                     starttime_ns=START_NS, sample_rate=fs, encoding="steim2",
                     record_length=RECLEN)
    return out, len(out) // RECLEN


def enc_feed(x, fs):
    packer = mseed.RecordPacker(NET, STA, LOC, CHA, fs, encoding="steim2",
                                record_length=RECLEN, starttime_ns=START_NS)
    records = []
    feed = packer.feed
    for i in range(0, len(x), FEED_CHUNK):
        records += feed(x[i:i + FEED_CHUNK])
    records += packer.flush()
    return records, len(records)


def _pymseed_record(fs):
    from pymseed import DataEncoding, MS3Record

    msr = MS3Record(reclen=RECLEN, encoding=DataEncoding.STEIM2)
    msr.sourceid = SOURCE_ID
    msr.set_starttime_str(START_ISO)
    msr.samprate = fs
    msr.formatversion = 2
    return msr


def enc_libmseed(x, fs):
    msr = _pymseed_record(fs)
    with msr.with_datasamples(x, "i"):
        nrec = msr.to_file("/dev/null", overwrite=True)
    return None, nrec


def enc_obspy(x, fs):
    from obspy import Stream, Trace, UTCDateTime

    trace = Trace(data=x, header={"network": NET, "station": STA, "location": LOC,
                                  "channel": CHA, "sampling_rate": fs,
                                  "starttime": UTCDateTime(START_ISO)})
    bio = io.BytesIO()
    Stream([trace]).write(bio, format="MSEED", encoding="STEIM2", reclen=RECLEN,
                          byteorder=">")
    out = bio.getvalue()
    return out, len(out) // RECLEN


def libmseed_buffer(x, fs):
    """Reference records written by libmseed 3 (pymseed generate)."""
    msr = _pymseed_record(fs)
    return b"".join(msr.generate(x, "i"))


ENCODERS = {"pack": enc_pack, "feed4096": enc_feed, "libmseed": enc_libmseed,
            "obspy": enc_obspy}
ENC_OURS = ("pack", "feed4096")
ENC_REFS = ("libmseed", "obspy")


# ---------------------------------------------------------------------------
# decoders: each returns something the correctness check can turn into samples

def dec_unpack(buf):
    return mseed.unpack(buf)


def dec_parse_records(buf):
    return mseed_kernel.parse_records(buf, RECLEN, True)


def dec_unpack_concat(buf):
    return np.concatenate([r.samples for r in mseed.unpack(buf)])


def dec_decode(buf):
    """Bulk path: every record's samples in one contiguous array, the
    direct counterpart of pymseed's trace list (which merges records)."""
    return mseed.decode(buf)


def dec_pymseed_tl(buf):
    from pymseed import MS3TraceList

    tl = MS3TraceList.from_buffer(buf, unpack_data=True)
    segments = [seg for tid in tl for seg in tid]
    arrays = [seg.np_datasamples for seg in segments]      # views, no copy
    return tl, arrays


def dec_obspy(buf):
    from obspy import read

    return read(io.BytesIO(buf), format="MSEED")


def samples_of(method, result):
    if method == "unpack":
        return np.concatenate([r.samples for r in result])
    if method == "parse_records":
        return np.concatenate([row[20] for row in result])
    if method in ("unpack+concat", "decode"):
        return result
    if method == "pymseed_tl":
        return np.concatenate(result[1]) if len(result[1]) != 1 else np.array(result[1][0])
    if method == "obspy":
        return np.concatenate([tr.data for tr in result])
    raise KeyError(method)


DECODERS = {"unpack": dec_unpack, "decode": dec_decode, "parse_records": dec_parse_records,
            "unpack+concat": dec_unpack_concat, "pymseed_tl": dec_pymseed_tl,
            "obspy": dec_obspy}
DEC_OURS = ("unpack", "decode", "parse_records", "unpack+concat")
DEC_REFS = ("pymseed_tl", "obspy")


# ---------------------------------------------------------------------------
# correctness guard (outside the timing)

def check_dataset(name, x, fs):
    """Verify our encoder against pymseed (and obspy) decoding, chunked
    feeding against one-shot packing, and our decoders on libmseed's
    records.  Returns (report dict, libmseed reference buffer)."""
    from pymseed import MS3TraceList

    report = {}
    ours, nrec_ours = enc_pack(x, fs)
    tl = MS3TraceList.from_buffer(ours, unpack_data=True)
    segs = [seg for tid in tl for seg in tid]
    report["pack_decoded_by_pymseed"] = bool(
        len(segs) == 1 and np.array_equal(segs[0].np_datasamples, x))
    del segs, tl
    report["pack_decoded_by_obspy"] = bool(np.array_equal(samples_of("obspy", dec_obspy(ours)), x))
    records, _ = enc_feed(x, fs)
    report["feed4096_equals_pack"] = b"".join(records) == ours
    ref = libmseed_buffer(x, fs)
    for method, dec in DECODERS.items():
        report["%s_on_libmseed_records" % method] = bool(
            np.array_equal(samples_of(method, dec(ref)), x))
    counts_ours = [r.num_samples for r in mseed.unpack(ours, decode=False)]
    counts_ref = [r.num_samples for r in mseed.unpack(ref, decode=False)]
    report["records_ours"] = nrec_ours
    report["records_libmseed"] = len(ref) // RECLEN
    full = lambda c: c[:-1] if len(c) > 1 else c          # noqa: E731
    report["samples_per_record_ours"] = statistics.mean(full(counts_ours))
    report["samples_per_record_libmseed"] = statistics.mean(full(counts_ref))
    report["ok"] = all(v for k, v in report.items() if isinstance(v, bool))
    return report, ref


# ---------------------------------------------------------------------------
# timing

def _minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_repetition(data, refs):
    """One interleaved pass over every data set and method; returns
    {(kind, data set, method): (seconds, samples, records, minor page faults)}."""
    out = {}
    clock = time.perf_counter
    for name, x in data.items():
        fs = RATES[name]
        for method, enc in ENCODERS.items():
            gc.collect()           # every call starts from the same GC state
            f0 = _minor_faults()
            t0 = clock()
            result, nrec = enc(x, fs)
            dt = clock() - t0
            faults = _minor_faults() - f0
            del result
            out[("encode", name, method)] = (dt, len(x), nrec, faults)
        buf = refs[name]
        nrec = len(buf) // RECLEN
        for method, dec in DECODERS.items():
            gc.collect()
            f0 = _minor_faults()
            t0 = clock()
            result = dec(buf)
            dt = clock() - t0
            faults = _minor_faults() - f0
            del result
            out[("decode", name, method)] = (dt, len(x), nrec, faults)
    return out


def summarise(kept, data):
    """Per (kind, data set, method): throughput spreads; per ours/reference
    pair: speed-ratio spreads (ratio per repetition)."""
    summary = {}
    for key in kept[0]["times"]:
        times = [rep["times"][key][0] for rep in kept]
        nsamp, nrec = kept[0]["times"][key][1:3]
        summary[key] = {
            "minor_faults": statistics.median(rep["times"][key][3] for rep in kept),
            "time_s": _util.spread(times),
            "msamples_per_s": _util.spread([nsamp / t / 1e6 for t in times]),
            "krecords_per_s": _util.spread([nrec / t / 1e3 for t in times]),
            "samples": nsamp, "records": nrec,
        }
    ratios = {}
    for kind, ours, theirs in (("encode", ENC_OURS, ENC_REFS), ("decode", DEC_OURS, DEC_REFS)):
        for name in data:
            for o in ours:
                for r in theirs:
                    per_rep = [rep["times"][(kind, name, r)][0] / rep["times"][(kind, name, o)][0]
                               for rep in kept]
                    ratios[(kind, name, o, r)] = _util.spread(per_rep) + (per_rep,)
    return summary, ratios


# ---------------------------------------------------------------------------
# reporting

def fmt3(spread, fmt):
    med, lo, hi = spread[:3]
    return ("%s [%s..%s]" % (fmt, fmt, fmt)) % (med, lo, hi)


def table_rows(kind, data, summary, ratios):
    methods = list(ENCODERS) if kind == "encode" else list(DECODERS)
    ours = ENC_OURS if kind == "encode" else DEC_OURS
    refs = ENC_REFS if kind == "encode" else DEC_REFS
    rows = []
    for name in data:
        for m in methods:
            s = summary[(kind, name, m)]
            cells = [name, m, fmt3(s["msamples_per_s"], "%.1f"),
                     "%.0f" % s["krecords_per_s"][0], "%.0f" % s["minor_faults"]]
            for r in refs:
                cells.append("%.2fx [%.2f..%.2f]" % ratios[(kind, name, m, r)][:3]
                             if m in ours else "")
            rows.append(cells)
    headers = ["data", "method", "Msamples/s median [min..max]", "k rec/s", "page faults"] + \
              ["speed vs %s" % r for r in refs]
    return headers, rows


def print_plain(headers, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def print_markdown(headers, rows):
    print("| " + " | ".join(h.replace("..", "–") for h in headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        print("| " + " | ".join(c.replace("..", "–").replace("x", "×") if i >= 2 else c
                                for i, c in enumerate(r)) + " |")


def evaluate_targets(ratios, data):
    results = []
    for kind, name, ours, ref, need in TARGETS:
        if name not in data:
            continue
        med, lo, hi, _ = ratios[(kind, name, ours, ref)]
        results.append({"kind": kind, "data": name, "method": ours, "reference": ref,
                        "target": need, "median": med, "min": lo, "max": hi,
                        "pass": med >= need})
    return results


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="1e6/1e6/4e5 samples, 3 repetitions, short waits (< 30 s)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions to keep (default 7; 3 with --quick)")
    ap.add_argument("--max-other", type=float, default=5.0,
                    help="redo a repetition whose other-process load exceeded this (%% of one "
                         "CPU; default 5: on a 2-vCPU VM even 20%% load on the other vCPU "
                         "slows these kernels by 20-40%%)")
    ap.add_argument("--max-wait", type=float, default=None,
                    help="longest wait for a quiet machine before a repetition (default 10 s; 3 s with --quick)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="time budget for the repetitions (default 120 s; 20 s with --quick)")
    ap.add_argument("--json", metavar="FILE", help="write environment, parameters and raw runs here")
    ap.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    args = ap.parse_args(argv)

    reps = args.reps if args.reps is not None else (3 if args.quick else 7)
    if reps < 1:
        ap.error("--reps must be at least 1")
    max_wait = args.max_wait if args.max_wait is not None else (3.0 if args.quick else 10.0)
    max_wait = min(max_wait, 10.0)
    budget = args.max_seconds if args.max_seconds is not None else (20.0 if args.quick else 120.0)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    t_begin = time.perf_counter()

    import obspy
    import pymseed

    env = _util.environment(REPO, {
        "pymseed": pymseed.__version__,
        "libmseed(pymseed)": pymseed.libmseed_version,
        "obspy": obspy.__version__,
        "seedlink_fast": getattr(seedlink_fast, "__version__", "?"),
        "seedlink_fast_ext": mseed_kernel.__file__,
    })
    params = {"quick": args.quick, "reps": reps, "sizes": sizes, "rates": RATES, "seeds": SEEDS,
              "record_length": RECLEN, "encoding": "steim2", "feed_chunk": FEED_CHUNK,
              "max_other_pct": args.max_other, "max_wait_s": max_wait,
              "max_seconds": budget, "gc": "enabled; gc.collect() before each timed call",
              "order": "interleaved, fixed"}
    print("# seedlink-fast miniSEED benchmark")
    print("# python %s, numpy %s, Cython %s, pymseed %s (libmseed %s), obspy %s" % (
        env["python"], env["numpy"], env["Cython"], env["pymseed"], env["libmseed(pymseed)"],
        env["obspy"]))
    print("# cpu: %s x%s; git %s%s" % (env["cpu_model"], env["cpu_count"], env["git"]["sha"][:12],
                                       " (dirty)" if env["git"]["dirty"] else ""))

    data, refs, checks, stats = {}, {}, {}, {}
    for name, maker in MAKERS.items():
        t0 = time.perf_counter()
        x = maker(sizes[name], SEEDS[name])
        b50, b99, dstd = difference_bits(x)
        stats[name] = {"n": len(x), "fs": RATES[name], "diff_std": dstd,
                       "diff_bits_p50": b50, "diff_bits_p99": b99,
                       "generate_s": time.perf_counter() - t0}
        report, ref = check_dataset(name, x, RATES[name])   # also warms every method up
        data[name], refs[name], checks[name] = x, ref, report
        print("[data] %-6s n=%d fs=%g diff std %.0f, bits p50 %.0f p99 %.0f; "
              "samples/record ours %.1f libmseed %.1f; checks %s" % (
                  name, len(x), RATES[name], dstd, b50, b99,
                  report["samples_per_record_ours"], report["samples_per_record_libmseed"],
                  "OK" if report["ok"] else "FAILED " + json.dumps(
                      {k: v for k, v in report.items() if v is False})), flush=True)
    all_ok = all(c["ok"] for c in checks.values())

    # Run until `reps` repetitions had other load <= --max-other, at most
    # 2 * reps attempts and within the time budget; keep the quiet ones, and
    # if too few were quiet, fill up with the least loaded of the others.
    reps_log = []
    t_reps = time.perf_counter()
    while sum(e["quiet"] for e in reps_log) < reps and len(reps_log) < 2 * reps:
        if len(reps_log) >= min(reps, 3) and time.perf_counter() - t_reps > budget:
            print("[stop] time budget of %.0f s used after %d attempts" % (budget, len(reps_log)))
            break
        pre_load, waited = _util.wait_quiet(max_other=args.max_other, max_wait=max_wait)
        gc.collect()
        with _util.OtherLoad() as load:
            times = run_repetition(data, refs)
        entry = {"attempt": len(reps_log) + 1, "other_cpu_pct": load.percent,
                 "steal_pct": load.steal_percent,
                 "pre_wait_load_pct": pre_load, "waited_s": waited,
                 "quiet": load.percent <= args.max_other, "times": times}
        reps_log.append(entry)
        print("[attempt %d] other-CPU %.1f%%%s, steal %s (waited %.1f s, load before %.1f%%), "
              "elapsed %.1f s" % (
                  entry["attempt"], load.percent, "" if entry["quiet"] else " > --max-other",
                  "?" if load.steal_percent is None else "%.1f%%" % load.steal_percent,
                  waited, pre_load, time.perf_counter() - t_begin), flush=True)
    ranked = sorted(reps_log, key=lambda e: (not e["quiet"], e["other_cpu_pct"]))
    kept = sorted(ranked[:reps], key=lambda e: e["attempt"])
    for e in reps_log:
        e["kept"] = e in kept
    if len(kept) < reps or not all(e["quiet"] for e in kept):
        print("[note] %d of %d kept repetitions had other load above %.0f%%"
              % (sum(not e["quiet"] for e in kept), len(kept), args.max_other))

    summary, ratios = summarise(kept, data)
    targets = evaluate_targets(ratios, data)
    loads = [e["other_cpu_pct"] for e in kept]

    print()
    for kind, title in (("encode", "ENCODE Steim2, 512-byte records"),
                        ("decode", "DECODE Steim2, 512-byte records written by libmseed 3")):
        print("== %s: %d interleaved repetitions, speed ratios per repetition" % (title, len(kept)))
        print_plain(*table_rows(kind, data, summary, ratios))
        print()
    print("== other processes' CPU during kept repetitions (%% of one CPU): %s" % (
        ", ".join("%.1f" % v for v in loads)))
    steals = [e["steal_pct"] for e in kept if e["steal_pct"] is not None]
    if steals:
        print("== hypervisor steal time during kept repetitions (%% of one CPU): %s" % (
            ", ".join("%.1f" % v for v in steals)))
    print()
    print("== TARGETS (median speed ratio over repetitions)")
    for t in targets:
        print("%-4s %s %-6s %-7s >= %.1fx %-10s: %.2fx [%.2f..%.2f]" % (
            "PASS" if t["pass"] else "MISS", t["kind"], t["data"], t["method"], t["target"],
            t["reference"], t["median"], t["min"], t["max"]))
    print("correctness checks: %s" % ("all OK" if all_ok else "FAILED (see [data] lines)"))
    print("total wall time %.1f s" % (time.perf_counter() - t_begin))

    if args.markdown:
        print()
        print("<!-- bench/bench_mseed.py%s, %d reps, %s, other load %s %% of one CPU -->" % (
            " --quick" if args.quick else "", len(kept), env["cpu_model"],
            _util.fmt_spread(loads, "%.1f")))
        for kind, title in (("encode", "Encode"), ("decode", "Decode")):
            print()
            print("**%s** (Steim2, 512-byte records; median [min–max] over %d interleaved "
                  "repetitions; speed ratio = their time / our time, per repetition; "
                  "page faults = median minor page faults of one run)" % (title, len(kept)))
            print()
            print_markdown(*table_rows(kind, data, summary, ratios))
        print()
        print("| target | median ratio [min–max] | result |")
        print("|---|---|---|")
        for t in targets:
            print("| %s %s: %s ≥ %.1f× %s | %.2f× [%.2f–%.2f] | %s |" % (
                t["kind"], t["data"], t["method"], t["target"], t["reference"],
                t["median"], t["min"], t["max"], "PASS" if t["pass"] else "MISS"))

    if args.json:
        def key(k):
            return "/".join(k)

        def run_json(entry):
            out = {k: v for k, v in entry.items() if k != "times"}
            out["times"] = {key(k): {"seconds": t, "samples": ns, "records": nr,
                                     "minor_page_faults": pf}
                            for k, (t, ns, nr, pf) in entry["times"].items()}
            return out
        doc = {
            "environment": env,
            "parameters": params,
            "datasets": stats,
            "checks": checks,
            "runs": [run_json(e) for e in reps_log],
            "summary": {key(k): v for k, v in summary.items()},
            "ratios": {key(k): {"median": v[0], "min": v[1], "max": v[2], "per_rep": v[3]}
                       for k, v in ratios.items()},
            "targets": targets,
            "other_cpu_pct_kept": loads,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print("wrote %s" % args.json)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""FirDecimator throughput against scipy.signal.upfirdn, measured interleaved.

Cases (shared/docs/performance-anchors.md section 3 uses the same filters):
  * 100-tap firwin(100, 0.8/D) low-pass, D = 2 and 5, on a 1e7-sample random
    walk fed in 400- and 4096-sample chunks;
  * SeisComP's stream100 chain FS2D5 -> F96C -> ULP -> VLP (100 Hz -> 0.1 Hz;
    the real taps from filters.fir when found, else firwin stand-ins of the
    same length, decimation and gain), fed in 400- and 4096-sample chunks.
Competitors, timed in the same repetitions in rotating order:
  * upfirdn_whole:  scipy.signal.upfirdn(h, x, 1, D) on the whole array
    (one call, polyphase, only kept outputs: the batch anchor);
  * upfirdn_stream: the anchor's streaming variant (upfirdn on history +
    block, state kept across blocks), also as the chain; timed on the first
    --stream-n samples to bound the run time (rates are per sample).
FirDecimator is timed with float64 input (as upfirdn gets) and int32 input
(what plugins deliver; the int32 -> float64 conversion is then included).

Reported: input and output samples/s, useful GMAC/s (outputs x taps / s, for
chains the sum over stages) and the speed-up over the matching upfirdn
variant; median of --reps repetitions (min..max).  Other CPU load is read from
/proc/stat over each repetition (busy time of all CPUs minus this process,
and the hypervisor steal time); a repetition is redone when the other load
exceeds --max-other % of one CPU, as long as the time budget allows.

Usage: python bench/bench_fir.py [--quick] [--reps 7] [--n 10000000] [--json out.json]
Needs the extension built (SEEDLINK_FAST_ONLY=fir python setup.py
build_ext --inplace) and PYTHONPATH=src, numpy, scipy.  Bounded by
--max-seconds (default 45) for the repetitions, under a minute in all.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported

import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import signal  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "reference"))
from seedlink_fast._ext.fir import FirDecimator  # noqa: E402

FILTERS_FIR = REPO.parent / "shared" / "reference" / "seiscomp-filters.fir"


# ------------------------------------------------------------- CPU load
def _proc_stat():
    """(busy jiffies of all CPUs, steal jiffies)"""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


class LoadMeter:
    """CPU used by everything except this process, and steal, in % of one CPU"""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK")

    def start(self):
        self.t0 = time.monotonic()
        self.s0 = _proc_stat()
        self.own0 = sum(os.times()[:2])

    def stop(self):
        wall = time.monotonic() - self.t0
        busy, steal = _proc_stat()
        own = sum(os.times()[:2]) - self.own0
        other = (busy - self.s0[0]) / self.hz - own
        return (max(0.0, 100.0 * other / wall), 100.0 * (steal - self.s0[1]) / self.hz / wall)


def wait_quiet(max_other, max_wait, probe=0.3):
    m = LoadMeter()
    t_end = time.monotonic() + max_wait
    while True:
        m.start()
        time.sleep(probe)
        other, _ = m.stop()
        if other <= max_other or time.monotonic() >= t_end:
            return other


# ------------------------------------------------------------- competitors
class UpfirdnHist:
    """Streaming upfirdn with state: keeps the unconsumed tail, computes only
    the kept outputs (the anchor's `upfirdn_hist`); same windows as
    FirDecimator: y[k] = sum_i h[i] x[kD + i]."""

    def __init__(self, taps, D, gain=1.0):
        self.h = np.asarray(taps, dtype=np.float64)[::-1] * gain  # convolution order
        self.D, self.L = D, len(taps)
        self.buf = np.zeros(0)
        self.pad = np.zeros((-(self.L - 1)) % D)

    def process(self, blk):
        buf = np.concatenate((self.buf, blk))
        L, D = self.L, self.D
        if len(buf) < L:
            self.buf = buf
            return np.zeros(0)
        nout = (len(buf) - L) // D + 1
        seg = buf[:(nout - 1) * D + L]
        # full convolution index n = kD + L - 1 holds window k; pad in front
        # so that these indices are multiples of D
        z = signal.upfirdn(self.h, np.concatenate((self.pad, seg)) if len(self.pad) else seg, 1, D)
        k0 = (L - 1 + len(self.pad)) // D
        self.buf = buf[nout * D:]
        return z[k0:k0 + nout]


def feed(obj, x, B):
    n = 0
    for i in range(0, len(x), B):
        n += len(obj.process(x[i:i + B]))
    return n


def feed_chain(stages, x, B):
    n = [0] * len(stages)
    for i in range(0, len(x), B):
        y = x[i:i + B]
        for j, st in enumerate(stages):
            y = st.process(y)
            n[j] += len(y)
    return n


# ------------------------------------------------------------- setup
def stream100_stages():
    spec = [("FS2D5", 160, 5, 1.0), ("F96C", 96, 2, 1.0), ("ULP", 400, 10, 1.0),
            ("VLP", 400, 10, 4.0)]
    if FILTERS_FIR.exists():
        import fir_ref
        f = fir_ref.load_fir_file(FILTERS_FIR)
        return [(n, f[n][0], f[n][1], f[n][2]) for n, _, _, _ in spec], "filters.fir"
    out = []
    for name, L, D, g in spec:
        out.append((name, signal.firwin(L, 0.8 / D) / g, D, g))
    return out, "firwin stand-ins"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="short run: --n 2e6 --stream-n 4e5 --reps 3 --max-seconds 15")
    ap.add_argument("--reps", type=int, default=None, help="default 7 (3 with --quick)")
    ap.add_argument("--n", type=int, default=None, help="default 1e7 (2e6 with --quick)")
    ap.add_argument("--stream-n", type=int, default=None,
                    help="samples for the (slow) streaming upfirdn variants "
                         "(default 2e6; 4e5 with --quick)")
    ap.add_argument("--taps", type=int, default=100)
    ap.add_argument("--blocks", default="400,4096")
    ap.add_argument("--max-seconds", type=float, default=None, help="default 45 (15 with --quick)")
    ap.add_argument("--max-other", type=float, default=25.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    for name, full, quick in (("reps", 7, 3), ("n", 10_000_000, 2_000_000),
                              ("stream_n", 2_000_000, 400_000), ("max_seconds", 45.0, 15.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    t_begin = time.monotonic()

    rng = np.random.default_rng(5)
    xi = np.cumsum(rng.integers(-100, 101, args.n)).astype(np.int32)
    xf = xi.astype(np.float64)
    xs = xf[:args.stream_n]
    blocks = [int(b) for b in args.blocks.split(",")]
    filt = {D: signal.firwin(args.taps, 0.8 / D) for D in (2, 5)}
    chain, chain_src = stream100_stages()
    kern = FirDecimator([1.0], 1).kernel
    meta = {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "kernel": kern,
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "n": args.n, "stream_n": len(xs), "chain_taps": chain_src}
    print(json.dumps(meta), flush=True)

    # ---- correctness: FirDecimator == streaming upfirdn == batch upfirdn
    chk = xf[:100_003]
    for D, h in filt.items():
        a = FirDecimator(h, D).process(chk)
        b = np.concatenate([UpfirdnHist(h, D).process(chk)])
        c = np.convolve(chk, h[::-1], "valid")[::D]
        ok = len(a) == len(b) == len(c) and np.allclose(a, b) and np.allclose(a, c)
        print(f"[check] D={D}: FirDecimator == upfirdn_stream == convolve: {ok}", flush=True)
        if not ok:
            sys.exit(1)

    # ---- the measured cases: name -> (fn returning (inputs, outputs, macs) , kind, D)
    cases = {}
    for D, h in filt.items():
        L = len(h)
        for B in blocks:
            for dt, xx in (("f64", xf), ("i32", xi)):
                def run(h=h, D=D, B=B, xx=xx):
                    nout = feed(FirDecimator(h, D), xx, B)
                    return len(xx), nout, nout * L
                cases[f"FirDecimator {dt} D={D} B={B}"] = (run, ("stream", D, B))

            def run_up(h=h, D=D, B=B):
                nout = feed(UpfirdnHist(h, D), xs, B)
                return len(xs), nout, nout * L
            cases[f"upfirdn_stream f64 D={D} B={B}"] = (run_up, ("stream", D, B))

        def run_whole(h=h, D=D):
            y = signal.upfirdn(h, xf, 1, D)
            nout = (len(xf) - L) // D + 1          # useful (full-window) outputs
            del y
            return len(xf), nout, nout * L
        cases[f"upfirdn_whole f64 D={D}"] = (run_whole, ("whole", D, 0))

    for B in blocks:
        def run_chain(B=B):
            n = feed_chain([FirDecimator(t, D, g) for _, t, D, g in chain], xi, B)
            return len(xi), n[0], sum(k * len(t) for k, (_, t, _, _) in zip(n, chain))
        cases[f"FirDecimator chain i32 B={B}"] = (run_chain, ("chain", 0, B))

        def run_chain_up(B=B):
            n = feed_chain([UpfirdnHist(t, D, g) for _, t, D, g in chain], xs, B)
            return len(xs), n[0], sum(k * len(t) for k, (_, t, _, _) in zip(n, chain))
        cases[f"upfirdn_stream chain f64 B={B}"] = (run_chain_up, ("chain", 0, B))

    # ---- interleaved repetitions
    names = list(cases)
    times = {k: [] for k in names}
    counts = {}
    loads = []
    meter = LoadMeter()
    rep = attempts = 0
    rep_dur = 0.0
    while rep < args.reps:
        attempts += 1
        elapsed = time.monotonic() - t_begin
        if rep >= 1 and elapsed + rep_dur > args.max_seconds:
            print(f"[stop] time budget of {args.max_seconds:.0f} s reached after {rep} reps")
            break
        t_rep = time.monotonic()
        wait_quiet(args.max_other, 1.0)
        order = names[rep % len(names):] + names[:rep % len(names)]
        meter.start()
        this = {}
        for k in order:
            t0 = time.perf_counter()
            counts[k] = cases[k][0]()
            this[k] = time.perf_counter() - t0
        other, steal = meter.stop()
        rep_dur = time.monotonic() - t_rep
        # redo a loaded repetition only while the budget still allows the rest
        spare = args.max_seconds - (time.monotonic() - t_begin) - rep_dur * (args.reps - rep)
        if other > args.max_other and spare > 0 and attempts <= 2 * args.reps:
            print(f"[rep] discarded: other load {other:.0f}% of one CPU (steal {steal:.0f}%)",
                  flush=True)
            continue
        for k, v in this.items():
            times[k].append(v)
        loads.append({"other_pct": round(other, 1), "steal_pct": round(steal, 1)})
        rep += 1
        print(f"[rep {rep}/{args.reps}] {time.monotonic() - t_begin:.1f} s, other load "
              f"{other:.0f}% of one CPU, steal {steal:.0f}%", flush=True)

    # ---- report
    res = {"meta": meta, "loads": loads, "cases": {}}
    for k in names:
        nin, nout, macs = counts[k]
        ts = times[k]
        rates = [nin / t for t in ts]
        res["cases"][k] = {
            "in_per_s": statistics.median(rates), "in_min": min(rates), "in_max": max(rates),
            "out_per_s": statistics.median(nout / t for t in ts),
            "gmac_per_s": statistics.median(macs / t for t in ts) / 1e9, "runs": len(ts),
            "inputs": nin, "outputs": nout}

    def ref_of(k):
        kind, D, B = cases[k][1]
        if k.startswith("upfirdn"):
            return None
        if kind == "chain":
            return f"upfirdn_stream chain f64 B={B}"
        return f"upfirdn_stream f64 D={D} B={B}"

    print(f"\n== FIR decimation, kernel {kern}, n={args.n} (streaming upfirdn: {len(xs)}), "
          f"median of {rep} reps [min..max]")
    hdr = (f"{'case':34s} {'in Ms/s':>8s} {'[min..max]':>15s} {'out Ms/s':>9s} "
           f"{'GMAC/s':>7s} {'x stream':>9s} {'x whole':>8s}")
    print(hdr)
    for k in names:
        r = res["cases"][k]
        ref = ref_of(k)
        sp = f"{r['in_per_s'] / res['cases'][ref]['in_per_s']:8.1f}x" if ref else ""
        kind, D, _ = cases[k][1]
        whole = f"upfirdn_whole f64 D={D}"
        sw = (f"{r['in_per_s'] / res['cases'][whole]['in_per_s']:7.1f}x"
              if kind == "stream" and not k.startswith("upfirdn") else "")
        r["speedup_vs_upfirdn_stream"] = (r["in_per_s"] / res["cases"][ref]["in_per_s"]) if ref else None
        print(f"{k:34s} {r['in_per_s'] / 1e6:8.1f} [{r['in_min'] / 1e6:6.1f}..{r['in_max'] / 1e6:6.1f}]"
              f" {r['out_per_s'] / 1e6:9.2f} {r['gmac_per_s']:7.2f} {sp:>9s} {sw:>8s}")
    print(f"(chain = FS2D5 -> F96C -> ULP -> VLP from {chain_src}; GMAC/s counts all stages; "
          f"'x stream' = speed-up over upfirdn_stream with the same blocks, "
          f"'x whole' = over one upfirdn call on the whole array)")
    print(f"total {time.monotonic() - t_begin:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

"""Shared helpers for the seedlink-fast benchmarks: quiet-machine gating,
run statistics and environment facts.

The quiet gating follows the method of the performance anchors: the CPU time
(utime + stime from ``/proc/<pid>/stat``) of every *other* process is summed
over a repetition and reported as a percentage of one CPU, and before each
repetition the benchmark waits (bounded) until that load is low.
"""

import os
import platform
import statistics
import subprocess
import sys
import time

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def other_cpu_ticks(exclude=()):
    """Return ``{pid: utime + stime clock ticks}`` for every process except
    this one, the pids in ``exclude`` and the kernel's ksoftirqd threads."""
    me = os.getpid()
    ticks = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return ticks
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me or pid in exclude:
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue
        lpar, rpar = raw.find("("), raw.rfind(")")
        if lpar < 0 or rpar < 0:
            continue
        if raw[lpar + 1:rpar].startswith("ksoftirqd"):
            continue
        fields = raw[rpar + 1:].split()
        # fields[0] is the state (stat field 3); utime/stime are fields 14/15
        try:
            ticks[pid] = int(fields[11]) + int(fields[12])
        except (IndexError, ValueError):
            continue
    return ticks


def other_cpu_percent(before, after, wall_s):
    """CPU used by other processes between two ``other_cpu_ticks`` snapshots,
    as a percentage of one CPU (100 = one CPU busy)."""
    if wall_s <= 0:
        return 0.0
    used = 0
    for pid, t in after.items():
        used += t - before.get(pid, 0)   # a process born in between counts from 0
    return 100.0 * used / _HZ / wall_s


def steal_ticks():
    """Total 'steal' clock ticks of all CPUs (time the hypervisor ran
    something else while this VM wanted to run), or None if unknown."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


class OtherLoad:
    """Context manager measuring, over its block, other processes' CPU
    (``percent``) and the hypervisor's steal time (``steal_percent``), both
    as a percentage of one CPU: ``with OtherLoad() as load: ...``."""

    def __enter__(self):
        self.percent = self.steal_percent = None
        self._steal0 = steal_ticks()
        self._s0 = other_cpu_ticks()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._t0
        self.percent = other_cpu_percent(self._s0, other_cpu_ticks(), wall)
        steal1 = steal_ticks()
        if self._steal0 is not None and steal1 is not None and wall > 0:
            self.steal_percent = 100.0 * (steal1 - self._steal0) / _HZ / wall
        return False


def wait_quiet(max_other=10.0, max_wait=10.0, probe=0.5):
    """Wait, at most ``max_wait`` seconds, until other processes use at most
    ``max_other`` % of one CPU over a ``probe``-second window.  Returns
    ``(last measured load %, seconds waited)``."""
    start = time.monotonic()
    while True:
        s0, t0 = other_cpu_ticks(), time.perf_counter()
        time.sleep(probe)
        load = other_cpu_percent(s0, other_cpu_ticks(), time.perf_counter() - t0)
        waited = time.monotonic() - start
        if load <= max_other or waited + probe > max_wait:
            return load, waited


def spread(values):
    """``(median, min, max)`` of a non-empty sequence."""
    values = list(values)
    return statistics.median(values), min(values), max(values)


def fmt_spread(values, fmt="%.2f"):
    """'median [min..max]' with the given number format."""
    med, lo, hi = spread(values)
    return ("%s [%s..%s]" % (fmt, fmt, fmt)) % (med, lo, hi)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_describe(repo_dir):
    """Commit sha of ``repo_dir`` (or a note when there is none), plus
    whether the work tree has changes."""
    def run(*args):
        try:
            out = subprocess.run(("git", "-C", repo_dir) + args, capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = run("rev-parse", "HEAD")
    status = run("status", "--porcelain")
    return {"sha": sha or "none (no commit yet)",
            "dirty": bool(status) if status is not None else None}


def module_version(name):
    try:
        module = __import__(name)
    except Exception:        # noqa: BLE001 - a missing/broken optional package
        return None
    return getattr(module, "__version__", "?")


def environment(repo_dir, extra=None):
    """Facts about the interpreter, packages and machine for a JSON report."""
    env = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "numpy": module_version("numpy"),
        "scipy": module_version("scipy"),
        "Cython": module_version("Cython"),
        "git": git_describe(repo_dir),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    if extra:
        env.update(extra)
    return env

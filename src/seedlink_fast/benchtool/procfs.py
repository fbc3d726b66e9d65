"""What /proc says about a server process: CPU time and memory of it and of
its children (SeisComP's plugins, our feeder plugin).  Any server works:
it is only a PID.  Linux only; every function returns None when the
process is gone or /proc is not there."""
import os
import resource

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """The /proc/PID/stat fields after the command name (field 3 on), or None."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            data = fh.read()
        return data[data.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def proc_cpu_s(pid):
    """utime + stime of process `pid` (all its threads), seconds, or None."""
    fields = _stat(pid) if pid else None
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid, key="VmRSS"):
    """A /proc/PID/status value in kB (VmRSS, VmHWM, ...), or None."""
    if not pid:
        return None
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def descendants(pid):
    """PIDs of the live children, grandchildren ... of `pid` (one /proc scan)."""
    children = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu_s(pid):
    """{"self": s, "children": s} for a server: its own utime + stime, and
    that of its live descendants plus the reaped ones (cutime + cstime).
    None when the process is gone."""
    fields = _stat(pid) if pid else None
    if fields is None:
        return None
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    kids = (int(fields[13]) + int(fields[14])) / CLK_TCK
    for child in descendants(pid):
        cf = _stat(child)
        if cf is not None:      # its own reaped children are counted by it
            kids += (int(cf[11]) + int(cf[12])) / CLK_TCK
    return {"self": own, "children": kids}


def tree_hwm_kb(pid):
    """{"self": VmHWM, "children_max": largest VmHWM of a descendant} in kB."""
    own = proc_status_kb(pid, "VmHWM")
    if own is None:
        return None
    kids = [proc_status_kb(c, "VmHWM") for c in descendants(pid)]
    return {"self": own, "children_max": max([k for k in kids if k] or [0])}


def raise_nofile(want):
    """Raise this process's RLIMIT_NOFILE soft limit towards `want`; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class CpuMeter:
    """CPU seconds a server (and its children) used between start() and
    stop(); every figure None when there is no PID or it went away."""

    def __init__(self, pid):
        self.pid = pid
        self._t0 = None

    def start(self):
        self._t0 = tree_cpu_s(self.pid) if self.pid else None
        return self

    def stop(self):
        t1 = tree_cpu_s(self.pid) if self._t0 else None
        if t1 is None:
            return {}
        return {"server_cpu_s": round(t1["self"] - self._t0["self"], 3),
                "children_cpu_s": round(t1["children"] - self._t0["children"], 3),
                "server_cpu_resolution_s": 1.0 / CLK_TCK}

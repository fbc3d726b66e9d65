"""What a finished pick hands over: per component the records and the
samples trimmed to the window, plus the output directory writer.

A ``WindowResult`` goes to every ``on_window`` callback (a repicker would
use ``result.components[sid].samples`` and ``.start_ns``) and to
``DirectoryOutput``, which writes per pick a directory named after the
sanitized publicID::

    <root>/<publicID>/NET.STA.LOC.CHA.mseed   raw records overlapping the window
    <root>/<publicID>/pick.xml                the pick as SCML 0.12
    <root>/<publicID>/summary.json            window, status, per component
                                              completeness, gaps, sample counts

``summary.json`` is written last (each file through a temporary name and a
rename), so a directory with a summary is whole.
"""
import json
import logging
import os
import time

import numpy as np

from .model import format_time, sanitize_name
from .parse import pick_to_scml

__all__ = ["ComponentResult", "WindowResult", "DirectoryOutput"]

log = logging.getLogger("seedlink_fast.picks")


def _iso(ns):
    return None if ns is None else format_time(ns)


class ComponentResult:
    """One component of a finished window.

    ``records`` are the raw records overlapping the window (time order, no
    duplicates); ``segments`` the samples inside the window as ``(start_ns,
    array)`` pieces, one per gap-free run; ``samples`` all of them
    concatenated and ``start_ns`` the time of its first sample (a complete
    component has exactly one segment, so ``samples`` is evenly sampled).
    """

    def __init__(self, stream, records, coverage, segments):
        self.stream = stream
        self.records = records
        self.coverage = coverage
        self.segments = segments

    @property
    def complete(self):
        return self.coverage.complete

    @property
    def gaps(self):
        return self.coverage.gaps

    @property
    def sample_rate(self):
        return self.coverage.rate

    @property
    def start_ns(self):
        return self.segments[0][0] if self.segments else None

    @property
    def samples(self):
        if not self.segments:
            return np.zeros(0, dtype=np.int32)
        if len(self.segments) == 1:
            return self.segments[0][1]
        return np.concatenate([s for _, s in self.segments])

    def problem(self):
        """What is missing, in words (None when complete)."""
        if self.complete:
            return None
        if not self.coverage.has_data:
            return "%s: no data" % self.stream
        return "%s: missing %s" % (self.stream, ", ".join(
            "%s..%s" % (_iso(a), _iso(b)) for a, b in self.gaps))

    @property
    def end_ns(self):
        """Time of the last sample inside the window (None without any)."""
        if not self.segments:
            return None
        start, values = self.segments[-1]
        return start + round((len(values) - 1) * 1e9 / self.sample_rate)

    def summary(self):
        """The JSON form; first/last sample are the ones inside the window."""
        return {"complete": self.complete, "records": len(self.records),
                "samples": int(sum(len(s) for _, s in self.segments)),
                "sample_rate": self.sample_rate,
                "first_sample": _iso(self.start_ns), "last_sample": _iso(self.end_ns),
                "segments": len(self.segments),
                "gaps": [[_iso(a), _iso(b)] for a, b in self.gaps]}


class WindowResult:
    """A finished pick: ``status`` is ``complete`` or ``expired`` (then
    ``reason`` says why; ``missing()`` lists what was missing)."""

    def __init__(self, pick, start_ns, end_ns, status, components, *, reason=None,
                 attempts=0, received=None, source=None, before=None, after=None):
        self.pick = pick
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.status = status
        self.components = components        # stream id -> ComponentResult, in order
        self.reason = reason
        self.attempts = attempts
        self.received = received             # wall clock, seconds
        self.finished = time.time()
        self.source = source
        self.before, self.after = before, after

    @property
    def complete(self):
        return self.status == "complete"

    def missing(self):
        return [p for p in (c.problem() for c in self.components.values()) if p]

    def summary(self):
        return {
            "pick": self.pick.as_dict(),
            "status": self.status,
            "reason": self.reason,
            "window": {"start": _iso(self.start_ns), "end": _iso(self.end_ns),
                       "before": self.before, "after": self.after},
            "components": {sid: c.summary() for sid, c in self.components.items()},
            "missing": self.missing(),
            "attempts": self.attempts,
            "received": _iso(int(self.received * 1e9)) if self.received else None,
            "finished": _iso(int(self.finished * 1e9)),
            "source": self.source,
        }


def _write(path, data):
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class DirectoryOutput:
    """Write each finished pick below `root` (see module docs); use as an
    ``on_window`` callback.  ``expired=False`` writes complete windows only."""

    def __init__(self, root, expired=True):
        self.root = str(root)
        self.expired = expired

    def path_for(self, pick):
        return os.path.join(self.root, sanitize_name(pick.public_id))

    def __call__(self, result):
        if not result.complete and not self.expired:
            return None
        path = self.path_for(result.pick)
        os.makedirs(path, exist_ok=True)
        for sid, comp in result.components.items():
            target = os.path.join(path, "%s.mseed" % sid)
            if comp.records:
                _write(target, b"".join(comp.records))
            elif os.path.exists(target):
                os.unlink(target)
        _write(os.path.join(path, "pick.xml"), pick_to_scml(result.pick))
        summary = result.summary()
        summary["files"] = {sid: "%s.mseed" % sid for sid, c in result.components.items()
                            if c.records}
        _write(os.path.join(path, "summary.json"),
               json.dumps(summary, indent=1).encode() + b"\n")
        return path

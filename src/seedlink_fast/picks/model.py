"""Picks, times and pick filters.

Times are ``int`` nanoseconds since 1970-01-01 UTC, as everywhere in
seedlink-fast; strings only at the edges (ISO 8601 with a ``Z``).

>>> t = parse_time("2026-11-21T23:55:00.25Z")
>>> format_time(t)
'2026-11-21T23:55:00.250000Z'
>>> Pick("p1", t, "XX", "TEST", "", "BHZ").stream_id
'XX.TEST..BHZ'
"""
import calendar
import fnmatch
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Optional

__all__ = ["Pick", "PickError", "PickFilter", "parse_time", "format_time", "seedlink_time",
           "sanitize_name", "NS"]

NS = 1_000_000_000

_ISO = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9})\d*)?)?)?"
    r"\s*(Z|[+-]00:?00)?\s*$", re.IGNORECASE)


class PickError(ValueError):
    """A pick cannot be used (missing field, bad time ...); it is skipped."""


def parse_time(text):
    """ISO 8601 UTC (``2026-11-21T23:55:00.123Z``; date only, no seconds,
    no zone, a blank for the ``T`` and ``+00:00`` also accepted) -> ns.

    Raises PickError for anything else, including non-UTC offsets.
    """
    if not isinstance(text, str):
        raise PickError("time must be a string, not %r" % (text,))
    m = _ISO.match(text)
    if not m:
        raise PickError("bad time %r (want ISO 8601 UTC)" % (text,))
    year, month, day, hour, minute, second = (int(g or 0) for g in m.groups()[:6])
    frac = m.group(7) or ""
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
                and hour < 24 and minute < 60 and second < 61):
            raise ValueError
    except (ValueError, OverflowError):
        raise PickError("bad time %r" % (text,)) from None
    return seconds * NS + int(frac.ljust(9, "0")) if frac else seconds * NS


def format_time(ns):
    """ns -> ``YYYY-MM-DDThh:mm:ss.ffffffZ`` (microseconds, floored)."""
    seconds, rest = divmod(int(ns), NS)
    tm = _gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (tm[:6] + (rest // 1000,))


def seedlink_time(ns, round_up=False):
    """ns -> SeedLink 3 ``YYYY,MM,DD,hh,mm,ss`` (whole seconds: floored, or
    raised to the next whole second with ``round_up``)."""
    seconds = -(-int(ns) // NS) if round_up else int(ns) // NS
    return "%04d,%02d,%02d,%02d,%02d,%02d" % _gmtime(seconds)[:6]


def _gmtime(seconds):
    return tuple(time.gmtime(seconds))


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def sanitize_name(text, limit=160):
    """A file-system-safe directory name for a publicID: characters other
    than letters, digits and ``._+-`` become ``_``; no leading dot; names
    longer than `limit` are cut and get a hash of the full ID appended."""
    name = _UNSAFE.sub("_", text).lstrip(".") or "_"
    if len(name) > limit:
        digest = hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:12]
        name = name[:limit - 13] + "-" + digest
    return name


@dataclass(frozen=True)
class Pick:
    """One pick: what the clients need from a SeisComP/QuakeML Pick.

    ``time_ns`` is the pick time; ``uncertainty`` is in seconds (kept for
    the output, not used for the window)."""

    public_id: str
    time_ns: int
    network: str
    station: str
    location: str
    channel: str
    phase_hint: Optional[str] = None
    evaluation_mode: Optional[str] = None
    uncertainty: Optional[float] = None

    def __post_init__(self):
        if not self.public_id:
            raise PickError("pick without publicID")
        if not self.network or not self.station:
            raise PickError("pick %s: waveformID needs networkCode and stationCode"
                            % self.public_id)
        if len(self.channel) < 2:
            raise PickError("pick %s: channelCode %r is too short to find the components"
                            % (self.public_id, self.channel))
        for code in (self.network, self.station, self.location, self.channel):
            if not re.fullmatch(r"[A-Za-z0-9_-]*", code):
                raise PickError("pick %s: bad stream code %r" % (self.public_id, code))

    @property
    def stream_id(self):
        return "%s.%s.%s.%s" % (self.network, self.station, self.location, self.channel)

    @property
    def iso_time(self):
        """The pick time as an ISO string."""
        return format_time(self.time_ns)

    def as_dict(self):
        """The JSON form (the one the JSON-lines sources read)."""
        out = {"publicID": self.public_id, "time": self.iso_time,
               "waveformID": {"networkCode": self.network, "stationCode": self.station,
                              "locationCode": self.location, "channelCode": self.channel}}
        for key, value in (("phaseHint", self.phase_hint),
                           ("evaluationMode", self.evaluation_mode),
                           ("uncertainty", self.uncertainty)):
            if value is not None:
                out[key] = value
        return out


class PickFilter:
    """Which picks to keep: phase hints, evaluation modes, stream patterns.

    Every criterion is a list of fnmatch patterns (None = no restriction).
    Phase hints and modes compare case-insensitively; a pick without a
    phase hint (mode) fails a phase (mode) filter.  Stream patterns are
    matched against ``NET.STA.LOC.CHA``; missing trailing parts mean ``*``
    (``GE`` is ``GE.*.*.*``, ``GE.AP*`` is ``GE.AP*.*.*``); a pattern
    starting with ``!`` excludes.

    >>> f = PickFilter(phases=["P*"], stations=["XX.*", "!XX.BAD"])
    >>> p = Pick("a", 0, "XX", "TEST", "", "BHZ", phase_hint="Pn")
    >>> f.reason(p) is None, f.reason(Pick("b", 0, "XX", "BAD", "", "BHZ", "P"))
    (True, 'station XX.BAD..BHZ excluded')
    """

    def __init__(self, phases=None, modes=None, stations=None):
        self.phases = [p.lower() for p in phases] if phases else None
        self.modes = [m.lower() for m in modes] if modes else None
        self.include, self.exclude = [], []
        for pattern in stations or ():
            target = self.exclude if pattern.startswith("!") else self.include
            parts = pattern.lstrip("!").split(".")
            if len(parts) > 4:
                raise ValueError("bad stream pattern %r (want NET.STA.LOC.CHA)" % pattern)
            target.append(".".join(parts + ["*"] * (4 - len(parts))))

    @staticmethod
    def _any(patterns, value):
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)

    def reason(self, pick):
        """None when the pick passes, else why it does not."""
        if self.phases is not None and not (
                pick.phase_hint and self._any(self.phases, pick.phase_hint.lower())):
            return "phase %s not selected" % (pick.phase_hint or "(none)")
        if self.modes is not None and not (
                pick.evaluation_mode and self._any(self.modes, pick.evaluation_mode.lower())):
            return "evaluation mode %s not selected" % (pick.evaluation_mode or "(none)")
        sid = pick.stream_id
        if self.include and not self._any(self.include, sid):
            return "station %s not selected" % sid
        if self._any(self.exclude, sid):
            return "station %s excluded" % sid
        return None

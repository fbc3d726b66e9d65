"""Reader for SeisComP's ``seedlink.ini``.

The file is scanned by a small re-implementation of SeisComP's flex lexer
(same states, same rules, longest match wins, ties go to the earlier rule),
so that odd input is read the same way:

* Only the section ``[name]`` matching the wanted name (case-insensitive) is
  used.  Text before the first ``[`` is ignored.
* Comment lines start with ``*``, ``#`` or ``;`` **in the first column**.  An
  indented ``# note`` is read as the definition of an unknown keyword ``#``,
  which ends the current station/plugin block (its later parameters are then
  silently dropped) - exactly like SeisComP.
* ``param = value`` (value up to whitespace or ``=``) and
  ``param = "quoted value"``.  A quoted value extends to the *last* double
  quote on the line that is not preceded by a backslash; the backslash stays
  in the value (``"a \\"b\\""`` gives ``a \\"b\\"``).  So two quoted values
  on one line merge into one; SeisComP's generator writes one per line.  An
  empty quoted value assigns nothing.
* ``keyword name`` starts a definition (``station KEY``, ``plugin NAME``);
  the assignments that follow, on the same or later lines, belong to it
  until the next definition.  Global parameters therefore come first.
* Keywords and parameter names are case-insensitive.  An unknown parameter
  gives the warning "parameter 'x' is not used"; a second assignment gives
  "assigned more than once" and the **first** value is kept.  A value that
  cannot be converted is reported and the parameter stays unset.
* Integers are read like C ``strtol`` and clamped to their range with a
  warning; booleans are ``enabled``/``disabled`` (we also accept
  ``true``/``false``/``yes``/``no``).

Deviations from SeisComP (stricter or more forgiving, never silently
different): a duplicate section, an invalid global ``encoding`` and an
invalid ``trusted``/``access`` entry raise ConfigError (SeisComP logs them
and then runs without stations or plugins); ``encoding`` is matched
case-insensitively everywhere; CR-LF line ends are accepted.  With
``strict=True`` every warning becomes a ConfigError.
"""

import logging
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Container, Dict, List, Optional, Tuple, Union

from .errors import ConfigError

log = logging.getLogger(__name__)

#: INFO levels, lowest first (``info``/``info_trusted`` values).
INFO_LEVELS = ("id", "capabilities", "stations", "streams", "gaps",
               "connections", "all")

ENCODINGS = ("steim1", "steim2")

_TRUE_WORDS = ("enabled", "true", "yes")
_FALSE_WORDS = ("disabled", "false", "no")


# ---------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------

@dataclass
class GlobalConfig:
    """Global parameters; defaults are the daemon's compiled-in values."""

    organization: str = ""
    network: str = ""
    lockfile: str = ""                      # empty: no lock file
    filebase: str = "/home/sysop/seedlink"
    port: int = 18000
    encoding: str = "steim1"
    trusted: List[str] = field(default_factory=list)   # empty: all trusted
    access: List[str] = field(default_factory=list)    # empty: all allowed
    info: str = "capabilities"
    info_trusted: str = "capabilities"
    window_extraction: bool = False
    window_extraction_trusted: bool = False
    websocket: bool = False
    websocket_trusted: bool = False
    stream_check: bool = False
    gap_check_pattern: str = ""
    gap_treshold: int = 10000               # (sic) microseconds
    buffers: int = 100
    segments: int = 2
    segsize: int = 100
    blanks: int = 10
    seq_gap_limit: int = 0
    connections: int = 0
    connections_per_ip: int = 0
    bytespersec: int = 0
    request_log: bool = True
    proc_gap_warn: int = 2
    proc_gap_flush: int = 0
    proc_gap_reset: int = 0
    backfill_buffer: float = 0.0            # seconds
    plugin_timeout: int = 0
    plugin_start_retry: int = 0
    plugin_shutdown_wait: int = 0
    filters: List[str] = field(default_factory=list)
    streams: List[str] = field(default_factory=list)
    # raw ingest (seedlink-fast only; docs/raw-ingest.md)
    raw_ingest_port: int = 65535
    raw_version: str = "auto"
    raw_idle_timeout: float = 0.0           # seconds, 0: never drop a silent link
    raw_idle_flush: float = 10.0            # seconds without data before partial records close
    raw_reconnect: float = 0.5              # first reconnect delay, doubling to 30 s
    # FDSN dataselect over HTTP on the bind address (seedlink-fast only;
    # docs/fdsnws.md): 0 = off
    http_port: int = 0

    @property
    def info_level(self) -> int:
        """Index of ``info`` in INFO_LEVELS."""
        return INFO_LEVELS.index(self.info)

    @property
    def info_trusted_level(self) -> int:
        """Index of ``info_trusted`` in INFO_LEVELS."""
        return INFO_LEVELS.index(self.info_trusted)


@dataclass
class StationConfig:
    """A ``station`` definition; unset values come from the globals."""

    key: str
    name: str
    network: str
    description: str = ""
    proc: Optional[str] = None
    encoding: str = "steim1"
    access: List[str] = field(default_factory=list)
    buffers: int = 100
    blanks: int = 10
    segments: int = 2
    segsize: int = 100
    stream_check: bool = False
    gap_check_pattern: str = ""
    gap_treshold: int = 10000
    proc_gap_warn: int = 2
    proc_gap_flush: int = 0
    proc_gap_reset: int = 0
    backfill_buffer: float = 0.0
    request_log: bool = True
    # raw ingest (seedlink-fast only): a device to connect to (HOST:PORT), or
    # none to accept pushes on the raw ingest port; the channel map says which
    # device channel ids feed which streams
    raw_source: str = ""
    raw_channels: str = ""
    raw_version: str = "auto"
    raw_idle_timeout: float = 0.0
    raw_idle_flush: float = 10.0
    raw_reconnect: float = 0.5
    filename: Optional[str] = None
    lineno: Optional[int] = None


@dataclass
class PluginConfig:
    """A ``plugin`` definition."""

    name: str
    cmd: str
    timeout: int = 0
    start_retry: int = 0
    shutdown_wait: int = 0
    proc: Optional[str] = None
    filename: Optional[str] = None
    lineno: Optional[int] = None


@dataclass
class SeedLinkConfig:
    """Everything read from the wanted section of seedlink.ini."""

    globals: GlobalConfig
    stations: List[StationConfig] = field(default_factory=list)
    plugins: List[PluginConfig] = field(default_factory=list)
    filename: Optional[str] = None
    section: str = "seedlink"
    warnings: List[str] = field(default_factory=list)

    def station(self, key: str) -> Optional[StationConfig]:
        """The station with this key, or None."""
        for st in self.stations:
            if st.key == key:
                return st
        return None

    def plugin(self, name: str) -> Optional[PluginConfig]:
        """The plugin with this name, or None."""
        for pl in self.plugins:
            if pl.name == name:
                return pl
        return None


# ---------------------------------------------------------------------------
# Value conversion
# ---------------------------------------------------------------------------

_C_SPACE = " \t\n\v\f\r"
_INT_RE = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[ \t\n\v\f\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
                       r"(?:[eE][+-]?[0-9]+)?\Z")
_LONG_MIN, _LONG_MAX = -2**63, 2**63 - 1


def _c_int(value: str) -> Optional[int]:
    """C ``(int) strtol(value, &tail, 10)`` with ``*tail == 0`` required."""
    if not _INT_RE.match(value):
        return None
    v = min(max(int(value.strip(_C_SPACE)), _LONG_MIN), _LONG_MAX)
    # long -> int conversion keeps the low 32 bits on Linux/x86-64.
    return (v + 2**31) % 2**32 - 2**31


class _Spec:
    """How one parameter converts and checks its value."""

    def convert(self, name: str, value: str, warn) -> Tuple[bool, object]:
        raise NotImplementedError


class _Str(_Spec):
    def convert(self, name, value, warn):
        return True, value


class _List(_Spec):
    """Comma/space separated list (SeisComP's StringListAttribute)."""

    def convert(self, name, value, warn):
        return True, [p for p in re.split(r"[, ]+", value) if p]


class _Int(_Spec):
    def __init__(self, lo=None, hi=None, special=None):
        self.lo, self.hi, self.special = lo, hi, special

    def convert(self, name, value, warn):
        v = _c_int(value)
        if v is None:
            warn("[%s] %s is not an integer" % (name, value))
            return False, None
        if self.special is not None and v == self.special:
            return True, v
        if self.lo is not None and v < self.lo:
            warn("[%s] %d is out of bounds, using %d instead"
                 % (name, v, self.lo))
            return True, self.lo
        if self.hi is not None and v > self.hi:
            warn("[%s] %d is out of bounds, using %d instead"
                 % (name, v, self.hi))
            return True, self.hi
        return True, v


class _Float(_Int):
    def convert(self, name, value, warn):
        if not _FLOAT_RE.match(value):
            warn("[%s] %s is not a floating point number" % (name, value))
            return False, None
        v = float(value.strip(_C_SPACE))
        if self.special is not None and v == self.special:
            return True, v
        if self.lo is not None and v < self.lo:
            warn("[%s] %g is out of bounds, using %g instead"
                 % (name, v, self.lo))
            return True, float(self.lo)
        if self.hi is not None and v > self.hi:
            warn("[%s] %g is out of bounds, using %g instead"
                 % (name, v, self.hi))
            return True, float(self.hi)
        return True, v


class _Bool(_Spec):
    def convert(self, name, value, warn):
        v = value.lower()
        if v in _TRUE_WORDS:
            return True, True
        if v in _FALSE_WORDS:
            return True, False
        warn("[%s] '%s' is neither 'enabled' nor 'disabled'" % (name, value))
        return False, None


class _Choice(_Spec):
    """Case-insensitive keyword, stored in lower case."""

    def __init__(self, choices, what):
        self.choices, self.what = choices, what

    def convert(self, name, value, warn):
        v = value.lower()
        if v in self.choices:
            return True, v
        warn("[%s] '%s' is not a valid %s" % (name, value, self.what))
        return False, None


class _Lower(_Spec):
    """String compared case-insensitively later (``encoding``)."""

    def convert(self, name, value, warn):
        return True, value.lower()


_ENCODING = _Lower()     # checked when the station/section is complete
_INFO = _Choice(INFO_LEVELS, "info level name")
_BOOL = _Bool()
_STR = _Str()
_LIST = _List()
_NONNEG = _Int(lo=0)
_PROC_GAP = _Int(lo=100, special=0)     # 0 disables, 1..99 become 100
_BACKFILL = _Float(hi=86400, special=0)
_RAW_VERSION = _Choice(("auto", "2.0", "1.1", "1.0"), "RAW version")
_RAW_SECONDS = _Float(lo=0, hi=86400)
_RAW_SPECS = {
    "raw_version": _RAW_VERSION, "raw_idle_timeout": _RAW_SECONDS,
    "raw_idle_flush": _RAW_SECONDS, "raw_reconnect": _Float(lo=0.01, hi=3600),
}

_STATION_SPECS = {
    "name": _STR, "network": _STR, "description": _STR, "proc": _STR,
    "encoding": _ENCODING, "gap_check_pattern": _STR,
    "gap_treshold": _Int(lo=100),
    "buffers": _Int(10, 100000), "blanks": _Int(0, 100),
    "segments": _Int(2, 1000), "segsize": _Int(10, 100000),
    "proc_gap_warn": _NONNEG, "proc_gap_flush": _PROC_GAP,
    "proc_gap_reset": _PROC_GAP, "backfill_buffer": _BACKFILL,
    "request_log": _BOOL, "stream_check": _BOOL, "access": _LIST,
    "raw_source": _STR, "raw_channels": _STR, **_RAW_SPECS,
}

_GLOBAL_SPECS = {
    "filters": _LIST, "streams": _LIST, "trusted": _LIST, "access": _LIST,
    "lockfile": _STR, "filebase": _STR, "network": _STR,
    "organization": _STR, "encoding": _ENCODING, "gap_check_pattern": _STR,
    "buffers": _Int(10, 100000), "blanks": _Int(0, 100),
    "segments": _Int(2, 1000), "segsize": _Int(10, 100000),
    "connections": _NONNEG, "connections_per_ip": _NONNEG,
    "seq_gap_limit": _Int(0, 1 << 24),
    "plugin_timeout": _NONNEG, "plugin_start_retry": _NONNEG,
    "plugin_shutdown_wait": _NONNEG,
    "gap_treshold": _Int(lo=100), "bytespersec": _NONNEG,
    "proc_gap_warn": _NONNEG, "proc_gap_flush": _PROC_GAP,
    "proc_gap_reset": _PROC_GAP, "backfill_buffer": _BACKFILL,
    "port": _Int(1, 65535),
    "request_log": _BOOL, "stream_check": _BOOL,
    "info": _INFO, "info_trusted": _INFO,
    "window_extraction": _BOOL, "window_extraction_trusted": _BOOL,
    "websocket": _BOOL, "websocket_trusted": _BOOL,
    "raw_ingest_port": _Int(1, 65535), **_RAW_SPECS,
    "http_port": _Int(0, 65535),
}

_PLUGIN_SPECS = {
    "cmd": _STR, "timeout": _NONNEG, "start_retry": _NONNEG,
    "shutdown_wait": _NONNEG, "proc": _STR,
}

# Station values copied from the globals when the definition starts.
_INHERITED = ("network", "encoding", "access", "buffers", "blanks",
              "segments", "segsize", "stream_check", "gap_check_pattern",
              "gap_treshold", "proc_gap_warn", "proc_gap_flush",
              "proc_gap_reset", "backfill_buffer", "request_log", *_RAW_SPECS)

_ACL_NUM = r"[ \t\n\v\f\r]*[+-]?[0-9]+"
_ACL_FORMS = [
    re.compile(r"(%s)\.(%s)\.(%s)\.(%s)/(%s)\.(%s)\.(%s)\.(%s)\Z"
               % ((_ACL_NUM,) * 8)),
    re.compile(r"(%s)\.(%s)\.(%s)\.(%s)/(%s)\Z" % ((_ACL_NUM,) * 5)),
    re.compile(r"(%s)\.(%s)\.(%s)\.(%s)\Z" % ((_ACL_NUM,) * 4)),
]


def parse_ip_acl(entry: str) -> Tuple[int, int]:
    """Parse one ``trusted``/``access`` entry into (ip, mask) integers.

    Accepted like SeisComP: ``a.b.c.d``, ``a.b.c.d/bits`` and
    ``a.b.c.d/m.m.m.m``.  A client address matches when
    ``(addr ^ ip) & mask == 0``.  Raises ValueError otherwise.
    """
    for form in _ACL_FORMS:
        m = form.match(entry)
        if not m:
            continue
        nums = [int(g.strip(_C_SPACE)) for g in m.groups()]
        if any(n < 0 for n in nums) or any(n > 255 for n in nums[:4]):
            break
        ip = (nums[0] << 24) | (nums[1] << 16) | (nums[2] << 8) | nums[3]
        if len(nums) == 8:
            if any(n > 255 for n in nums[4:]):
                break
            mask = (nums[4] << 24) | (nums[5] << 16) | (nums[6] << 8) | nums[7]
        elif len(nums) == 5:
            if nums[4] > 32:
                break
            mask = (0xFFFFFFFF << (32 - nums[4])) & 0xFFFFFFFF
        else:
            mask = 0xFFFFFFFF
        return ip, mask
    raise ValueError("invalid IP address/mask: %s" % entry)


# ---------------------------------------------------------------------------
# Definitions (what the lexer feeds)
# ---------------------------------------------------------------------------

class _Attributes:
    """Parameters of one block; each may be set once."""

    def __init__(self, specs: Dict[str, _Spec], values: Dict[str, object]):
        self.specs = specs
        self.values = values
        self.assigned = set()
        self.lines: Dict[str, int] = {}

    def set(self, ctx: "_Context", name: str, value: str) -> None:
        key = name.lower()
        spec = self.specs.get(key)
        if spec is None:
            ctx.warn("parameter '%s' is not used" % name)
            return
        if key in self.assigned:
            ctx.warn("parameter '%s' is assigned more than once" % name)
            return
        ok, converted = spec.convert(name, value, ctx.warn)
        if ok:  # a failed conversion leaves the parameter unassigned
            self.values[key] = converted
            self.assigned.add(key)
            self.lines[key] = ctx.lineno


class _Element:
    """A definition keyword; mirrors SeisComP's CfgElement interface."""

    def start_attributes(self, ctx, name) -> Optional[_Attributes]:
        return None

    def end_attributes(self, ctx) -> None:
        pass

    def start_children(self, ctx, name) -> Optional[Dict[str, "_Element"]]:
        return None

    def end_children(self, ctx) -> None:
        pass


class _StationDef(_Element):
    def __init__(self, section: "_SectionDef"):
        self.section = section
        self.attrs: Optional[_Attributes] = None
        self.key = ""
        self.lineno = 0

    def start_attributes(self, ctx, name):
        g = self.section.globals_values
        values = {k: g[k] for k in _INHERITED}
        values["access"] = list(g["access"])
        values.update(name=name, description="", proc="", raw_source="", raw_channels="")
        self.key, self.lineno = name, ctx.lineno
        self.attrs = _Attributes(_STATION_SPECS, values)
        return self.attrs

    def end_attributes(self, ctx):
        v = self.attrs.values
        where = self.lineno
        out = ctx.config
        if any(st.key == self.key for st in out.stations):
            ctx.warn("station %s is already defined" % self.key, where)
            return
        if v["encoding"] not in ENCODINGS:
            ctx.warn("station %s: unsupported encoding '%s'"
                     % (self.key, v["encoding"]), where)
            return
        for entry in v["access"]:
            try:
                parse_ip_acl(entry)
            except ValueError as exc:
                ctx.warn("station %s: %s" % (self.key, exc), where)
                return
        if v["raw_channels"] or v["raw_source"]:
            self._check_raw(ctx, v, where)
        for st in out.stations:
            if (st.network, st.name) == (v["network"], v["name"]):
                ctx.warn("failed to register %s (%s_%s is already in use)"
                         % (self.key, v["network"], v["name"]), where)
                return
        out.stations.append(StationConfig(
            key=self.key, proc=v["proc"] or None, filename=ctx.filename,
            lineno=where,
            **{k: v[k] for k in _STATION_SPECS if k != "proc"}))


    def _check_raw(self, ctx, v, where):
        """A bad raw setting disables raw ingest for this station only."""
        from .raw.protocol import parse_channel_map, parse_address

        try:
            if not v["raw_channels"]:
                raise ValueError("raw_source needs raw_channels")
            parse_channel_map(v["raw_channels"])
            if v["raw_source"]:
                parse_address(v["raw_source"])
        except ValueError as exc:
            ctx.warn("station %s: %s; raw ingest disabled" % (self.key, exc), where)
            v["raw_channels"] = v["raw_source"] = ""


class _PluginDef(_Element):
    def __init__(self, section: "_SectionDef"):
        self.section = section
        self.attrs: Optional[_Attributes] = None
        # SeisComP never resets cmd, so a plugin block without cmd reuses
        # the one of the previous block.
        self.cmd = ""
        self.name = ""
        self.lineno = 0

    def start_attributes(self, ctx, name):
        if any(p.name == name for p in ctx.config.plugins):
            ctx.warn("plugin %s is already defined" % name)
            self.attrs = None
            return None
        g = self.section.globals_values
        self.name, self.lineno = name, ctx.lineno
        self.attrs = _Attributes(_PLUGIN_SPECS, {
            "cmd": self.cmd, "timeout": g["plugin_timeout"],
            "start_retry": g["plugin_start_retry"],
            "shutdown_wait": g["plugin_shutdown_wait"], "proc": ""})
        return self.attrs

    def end_attributes(self, ctx):
        v = self.attrs.values
        self.cmd = v["cmd"]
        if not v["cmd"]:
            ctx.warn("Command was not specified for plugin %s" % self.name,
                     self.lineno)
            return
        ctx.config.plugins.append(PluginConfig(
            name=self.name, cmd=v["cmd"], timeout=v["timeout"],
            start_retry=v["start_retry"], shutdown_wait=v["shutdown_wait"],
            proc=v["proc"] or None, filename=ctx.filename,
            lineno=self.lineno))


class _SectionDef(_Element):
    """The ``[section]`` element: globals plus station/plugin children."""

    def __init__(self, want: str):
        self.want = want
        self.found_line: Optional[int] = None
        self.attrs: Optional[_Attributes] = None
        self.globals_values = {f.name: getattr(GlobalConfig(), f.name)
                               for f in fields(GlobalConfig)}

    def start_attributes(self, ctx, name):
        if name.lower() != self.want.lower():
            return None
        if self.found_line is not None:
            raise ConfigError("duplicate section '%s' (first at line %d)"
                              % (name, self.found_line), ctx.filename,
                              ctx.lineno)
        self.found_line = ctx.lineno
        self.attrs = _Attributes(_GLOBAL_SPECS, self.globals_values)
        return self.attrs

    def start_children(self, ctx, name):
        if name.lower() != self.want.lower() or self.attrs is None:
            return None
        # The globals are complete once the first definition starts.
        self.check_globals(ctx)
        return {"station": _StationDef(self), "plugin": _PluginDef(self)}

    def check_globals(self, ctx) -> None:
        """Errors that make SeisComP ignore every station and plugin."""
        lines = self.attrs.lines
        values = self.globals_values
        if values["encoding"] not in ENCODINGS:
            raise ConfigError("unsupported encoding '%s'" % values["encoding"],
                              ctx.filename, lines.get("encoding"))
        for key in ("trusted", "access"):
            for entry in values[key]:
                try:
                    parse_ip_acl(entry)
                except ValueError as exc:
                    raise ConfigError("%s: %s" % (key, exc), ctx.filename,
                                      lines.get(key)) from None


# ---------------------------------------------------------------------------
# Lexer (a transcription of SeisComP's flex rules)
# ---------------------------------------------------------------------------

(INITIAL, SKIP, SECTION, DATA, PARAM, EQUALS, QVALUE, VALUE, NAME,
 RECOVERY) = range(10)
_L_SECTION, _L_DEFINITION = 1, 2


@dataclass
class _Rule:
    regex: "re.Pattern"
    action: Callable
    bol: bool = False           # only at the beginning of a line (flex ^)
    quote_context: bool = False  # flex trailing context /\" (not consumed)


class _Context:
    """Lexer state plus SeisComP's element stack."""

    def __init__(self, text, filename, section, strict):
        self.text = text
        self.filename = filename
        self.strict = strict
        self.lineno = 1
        self.state = INITIAL
        self.nextstate = INITIAL
        self.ptoken = ""
        self.section = _SectionDef(section)
        self.config = SeedLinkConfig(GlobalConfig(), filename=filename,
                                     section=section)
        # Element stack: maps of known keywords per scope level.
        self.maps: List[Optional[Dict[str, _Element]]] = [
            {"section": self.section}]
        self.elements: List[Optional[_Element]] = []
        self.scope = _L_SECTION
        self.current_name = ""
        self.current: Optional[_Element] = None
        self.attributes: Optional[_Attributes] = None

    def warn(self, msg: str, lineno: Optional[int] = None) -> None:
        line = self.lineno if lineno is None else lineno
        if self.strict:
            raise ConfigError(msg, self.filename, line)
        text = "%s:%d: %s" % (self.filename, line, msg)
        self.config.warnings.append(text)
        log.warning("%s", text)

    # -- SeisComP's CfgStack -----------------------------------------------

    def _push(self, element, name):
        self.elements.append(element)
        self.maps.append(element.start_children(self, name)
                         if element is not None else None)

    def _pop(self):
        element = self.elements.pop()
        if element is not None and self.maps[-1] is not None:
            element.end_children(self)
        self.maps.pop()

    def start_element(self, keyword: str, name: str, level: int) -> None:
        if self.current is not None and self.attributes is not None:
            self.current.end_attributes(self)
        if level > self.scope:
            self._push(self.current, self.current_name)
        elif level < self.scope:
            self._pop()
        self.scope = level
        self.current_name = name
        self.current = None
        self.attributes = None
        elements = self.maps[-1]
        if elements is None:
            return
        self.current = elements.get(keyword.lower())
        if self.current is None:
            self.warn("definition of '%s' is not used" % keyword)
            return
        self.attributes = self.current.start_attributes(self, name)

    def set(self, name: str, value: str) -> None:
        if self.attributes is not None:
            self.attributes.set(self, name, value)

    def finish(self) -> None:
        if self.current is not None and self.attributes is not None:
            self.current.end_attributes(self)
        while self.scope > _L_SECTION:
            self._pop()
            self.scope -= 1
        self.current = self.attributes = None

    # -- actions -----------------------------------------------------------

    def skipto(self, state):
        self.nextstate, self.state = state, SKIP

    def recover(self, state):
        self.nextstate, self.state = state, RECOVERY

    def parse_error(self):
        self.warn("parse error")


def _newline(c, t):
    c.lineno += 1


def _ignore(c, t):
    pass


def _section_end(c, t):
    if c.current is not None:
        c.skipto(DATA)
    else:
        c.state = INITIAL


def _to(state, push_back=False, skip=False):
    """Action: switch to ``state`` (via SKIP if ``skip``); ``push_back`` is
    flex's ``yyless(0)``: the matched text is scanned again."""
    def action(c, t):
        if skip:
            c.skipto(state)
        else:
            c.state = state
        return push_back
    return action


def _error_then(state):
    """Action of the catch-all rules: "parse error", skip to the end of the
    line, then continue in ``state``."""
    def action(c, t):
        c.parse_error()
        c.recover(state)
        return True
    return action


def _skip_resume(c, t):
    c.state = c.nextstate
    return True


def _recovery_newline(c, t):
    c.skipto(c.nextstate)
    return True


def _param(c, t):
    c.ptoken = t
    c.state = EQUALS


def _qvalue(c, t):
    c.set(c.ptoken, t)


def _value(c, t):
    c.set(c.ptoken, t)
    c.skipto(DATA)


def _name(c, t):
    c.start_element(c.ptoken, t, _L_DEFINITION)
    c.skipto(DATA)


def _section_name(c, t):
    c.start_element("section", t, _L_SECTION)


_R = re.compile
_COMMENTS = [_Rule(_R(r"\*[^\n]*"), _ignore, bol=True),
             _Rule(_R(r"#[^\n]*"), _ignore, bol=True),
             _Rule(_R(r";[^\n]*"), _ignore, bol=True)]
_NEWLINE = _Rule(_R(r"\n"), _newline)
_ANY = _R(r"[^\n]|\n")

_RULES = {
    INITIAL: [_Rule(_R(r"[^\[\n]+"), _ignore),
              _Rule(_R(r"\[[ \t]*"), _to(SECTION)),
              _NEWLINE] + _COMMENTS,
    SKIP: [_NEWLINE] + _COMMENTS + [
        _Rule(_R(r"[ \t]+"), _ignore),
        _Rule(_R(r"[^\n]"), _skip_resume)],
    SECTION: [_Rule(_R(r"[^ \t\n\[\]]+"), _section_name),
              _Rule(_R(r"[ \t]*\]"), _section_end),
              _Rule(_ANY, _error_then(INITIAL))],
    DATA: [_Rule(_R(r"\["), _to(INITIAL, push_back=True)),
           _Rule(_R(r"[^\n]"), _to(PARAM, push_back=True, skip=True))],
    PARAM: [_Rule(_R(r"[^ \t\n=]+"), _param)],
    EQUALS: [_Rule(_R(r'[ \t]*=[ \t]*"'), _to(QVALUE)),
             _Rule(_R(r"[ \t]*=[ \t]*"), _to(VALUE)),
             _Rule(_R(r"[ \t]+"), _to(NAME))],
    # [^\\] may be a newline, so a value can swallow one line end.
    QVALUE: [_Rule(_R(r'[^\n]*[^\\](?=")'), _qvalue, quote_context=True),
             _Rule(_R(r'"'), _to(DATA, skip=True))],
    VALUE: [_Rule(_R(r"[^ \t\n=]+"), _value)],
    NAME: [_Rule(_R(r"[^ \t\n=]+"), _name)],
    RECOVERY: [_Rule(_R(r"[^\n]+"), _ignore),
               _Rule(_R(r"\n"), _recovery_newline)],
}
# The catch-all "parse error" rule of the remaining states comes last.
for _state in (PARAM, EQUALS, QVALUE, VALUE, NAME):
    _RULES[_state].append(_Rule(_ANY, _error_then(DATA)))


def _scan(ctx: _Context) -> None:
    """Run the lexer over the whole text, feeding ctx."""
    text, pos, n = ctx.text, 0, len(ctx.text)
    at_bol = True
    while pos < n:
        best, best_len, best_tok = None, -1, ""
        for rule in _RULES[ctx.state]:
            if rule.bol and not at_bol:
                continue
            m = rule.regex.match(text, pos)
            if m is None:
                continue
            length = m.end() - pos + (1 if rule.quote_context else 0)
            if length > best_len:
                best, best_len, best_tok = rule, length, m.group()
        if best is None:
            raise AssertionError("lexer has no rule for state %d" % ctx.state)
        if best_tok:
            at_bol = best_tok.endswith("\n")
        if not best.action(ctx, best_tok):     # True means yyless(0)
            pos += len(best_tok)
    if ctx.state not in (INITIAL, SKIP):
        ctx.warn("unexpected eof")


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def parse_ini(text: str, filename: str = "<string>",
              section: str = "seedlink", strict: bool = False
              ) -> SeedLinkConfig:
    """Parse seedlink.ini text and return the wanted section's configuration.

    ``section`` is matched case-insensitively (SeisComP uses the executable's
    name).  Problems SeisComP only logs are logged as warnings (and listed in
    ``warnings`` of the result); ``strict=True`` raises ConfigError for them.
    A missing or duplicate section raises ConfigError.
    """
    text = text.replace("\r\n", "\n")
    ctx = _Context(text, filename, section, strict)
    _scan(ctx)
    ctx.finish()
    sect = ctx.section
    if sect.found_line is None:
        raise ConfigError("section '%s' doesn't exist" % section, filename)
    # Also for files without any definition (start_children never ran).
    sect.check_globals(ctx)
    ctx.config.globals = GlobalConfig(**sect.globals_values)
    return ctx.config


def load_ini(path: Union[str, "os.PathLike[str]"], section: str = "seedlink",
             strict: bool = False) -> SeedLinkConfig:
    """Read seedlink.ini from ``path``; see parse_ini."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError("cannot open file: %s" % exc.strerror,
                          os.fspath(path)) from None
    return parse_ini(data.decode("utf-8", "surrogateescape"), os.fspath(path),
                     section, strict)


def check_procs(config: SeedLinkConfig, procs: Container[str],
                strict: bool = False) -> SeedLinkConfig:
    """Drop stations and plugins whose ``proc`` is not among ``procs``.

    SeisComP refuses such definitions with "stream processor 'X' is not
    defined"; this does the same once streams.xml has been loaded.  Returns
    a new SeedLinkConfig; ``strict=True`` raises ConfigError instead.
    """
    def keep(item) -> bool:
        if item.proc is None or item.proc in procs:
            return True
        msg = "stream processor '%s' is not defined" % item.proc
        if strict:
            raise ConfigError(msg, item.filename, item.lineno)
        log.warning("%s:%s: %s", item.filename, item.lineno, msg)
        return False

    return replace(config,
                   stations=[s for s in config.stations if keep(s)],
                   plugins=[p for p in config.plugins if keep(p)])

"""Reader for SeedLink's ``streams.xml`` (stream processor definitions).

Structure::

    <streams>
      <proc name="stream100">
        <using proc="other"/>              merge the inputs of an earlier proc
        <tree>
          <input name="Z" channel="Z" location="" rate="100"/>
          <node filter="FS2D5" stream="BH">  nested decimation nodes
            <node filter="F96C"> ... </node>
          </node>
        </tree>
      </proc>
    </streams>

Behaviour follows SeisComP's reader: element and attribute names are matched
case-insensitively, unknown elements/attributes only produce warnings (the
content of an unknown element is skipped), node subtrees without any
``stream`` are pruned, and inputs are looked up by name with the first
definition in a proc winning over later ones and over inputs merged with
``<using>`` (among several ``<using>`` the last one wins).  ``rate`` is read
like C ``strtoul(…, 0)``, so ``0x64`` is 100 and ``010`` is 8.

Where SeisComP only logs and carries on with a half-defined processor
(malformed XML, input without name or valid rate, unknown filter, unknown
``<using>`` proc) we raise ConfigError with file and line instead.
"""

import logging
import re
import xml.parsers.expat
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

from .errors import ConfigError
from .firfile import FirFilter, PathArg, read_config_bytes, split_file_list

log = logging.getLogger(__name__)

#: Sample rate numerator and denominator must lie in 1..RATE_RANGE.
RATE_RANGE = 65535

#: Plugin packets carry the input (channel) name in a 10-byte field.
MAX_INPUT_NAME = 10


@dataclass
class Node:
    """A processing node: optional FIR filter, optional output stream."""

    filter: Optional[str] = None
    stream: Optional[str] = None
    children: List["Node"] = field(default_factory=list)
    filename: Optional[str] = None
    lineno: Optional[int] = None

    def has_stream(self) -> bool:
        """True if this node or any descendant produces an output stream."""
        return bool(self.stream) or any(c.has_stream() for c in self.children)

    def stream_count(self) -> int:
        """Number of output streams in this subtree."""
        return (1 if self.stream else 0) + sum(c.stream_count()
                                               for c in self.children)


@dataclass
class Input:
    """A raw input channel feeding a tree (``<input>``).

    The rate is kept as written (``200/2`` stays 200/2); node rates derived
    from it are reduced fractions.
    """

    name: str
    channel: str = ""
    location: str = ""
    rate_num: int = 1
    rate_den: int = 1
    filename: Optional[str] = None
    lineno: Optional[int] = None

    @property
    def rate(self) -> Fraction:
        """Sample rate in Hz as an exact fraction."""
        return Fraction(self.rate_num, self.rate_den)


@dataclass
class Tree:
    """A ``<tree>``: every input instantiates all of ``nodes``."""

    inputs: List[Input] = field(default_factory=list)
    nodes: List[Node] = field(default_factory=list)
    filename: Optional[str] = None
    lineno: Optional[int] = None

    def stream_count(self) -> int:
        """Output streams produced by one input of this tree."""
        return sum(n.stream_count() for n in self.nodes)


@dataclass
class Proc:
    """A named stream processor (``<proc>``), with ``<using>`` merged in.

    ``trees`` holds only the inputs that are in effect: duplicates resolved
    and inputs without any output stream removed.  Node lists of merged trees
    are shared with the proc they come from.
    """

    name: str
    trees: List[Tree] = field(default_factory=list)
    filename: Optional[str] = None
    lineno: Optional[int] = None

    def inputs(self) -> Dict[str, Tuple[Input, Tree]]:
        """Map of input name to (input, tree it feeds)."""
        return {inp.name: (inp, tree) for tree in self.trees
                for inp in tree.inputs}

    def stream_count(self) -> int:
        """Total number of output streams of one instance of this proc."""
        return sum(len(t.inputs) * t.stream_count() for t in self.trees)


# ---------------------------------------------------------------------------
# Sample rates
# ---------------------------------------------------------------------------

_C_SPACE = " \t\n\v\f\r"
_UL_RE = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _strtoul0(text: str) -> Tuple[Optional[int], str]:
    """C ``strtoul(text, &tail, 0)`` for non-negative numbers.

    Returns (value, tail); value is None (and tail the whole text) when no
    digits can be read.  A minus sign is treated as "no number" because the
    wrapped-around value would be out of range anyway.
    """
    s = text.lstrip(_C_SPACE)
    if s.startswith("+"):
        s = s[1:]
    m = _UL_RE.match(s)
    if not m:
        return None, text
    digits = m.group()
    if len(digits) > 1 and digits[1] in "xX":
        value = int(digits, 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return value, s[m.end():]


def parse_rate(text: str) -> Tuple[int, int]:
    """Parse an ``<input rate>`` value: ``N`` or ``N/D``, 1..65535 each.

    Raises ValueError for anything else (decimals are not accepted).
    """
    num, tail = _strtoul0(text)
    den = 1
    if num is not None and tail.startswith("/"):
        den, tail = _strtoul0(tail[1:])
    if (num is None or den is None or tail or not 1 <= num <= RATE_RANGE
            or not 1 <= den <= RATE_RANGE):
        raise ValueError("%r is not a valid sample rate (N or N/D with "
                         "integers 1..%d)" % (text, RATE_RANGE))
    return num, den


def node_output_rate(parent_rate: Fraction, decimation: int) -> Fraction:
    """Rate of a node's output: parent rate / decimation, reduced."""
    return Fraction(parent_rate) / decimation


# ---------------------------------------------------------------------------
# XML reader
# ---------------------------------------------------------------------------

# Children each element accepts (lower-case); None marks the document level.
_CHILDREN = {
    None: ("streams",),
    "streams": ("proc",),
    "proc": ("using", "tree"),
    "tree": ("input", "node"),
    "node": ("node",),
    "using": (),
    "input": (),
}

_ATTRIBUTES = {
    "streams": (),
    "proc": ("name",),
    "using": ("proc",),
    "tree": (),
    "input": ("name", "channel", "location", "rate"),
    "node": ("filter", "stream"),
}


class _Frame:
    """One open element while parsing."""

    __slots__ = ("kind", "obj", "lineno", "extra")

    def __init__(self, kind, obj=None, lineno=None, extra=None):
        self.kind = kind      # element name, or None for a skipped element
        self.obj = obj
        self.lineno = lineno
        self.extra = extra


class _ProcBuilder:
    """Collects one ``<proc>`` while its content is being parsed."""

    def __init__(self, name: str, filename: str, lineno: int):
        self.proc = Proc(name, [], filename, lineno)
        self.own_trees: List[Tree] = []
        self.own_names: Dict[str, Input] = {}
        self.using: List[Proc] = []


class _StreamsParser:
    def __init__(self, filename: str, procs: Dict[str, Proc],
                 filters: Optional[Dict[str, FirFilter]]):
        self.filename = filename
        self.procs = procs
        self.filters = filters
        self.stack: List[_Frame] = []
        self.found_root = False
        self.parser = xml.parsers.expat.ParserCreate()
        self.parser.ordered_attributes = True
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._chardata

    # -- helpers ----------------------------------------------------------

    def _line(self) -> int:
        return self.parser.CurrentLineNumber

    def _warn(self, msg: str, lineno: Optional[int] = None) -> None:
        log.warning("%s:%d: %s", self.filename,
                    self._line() if lineno is None else lineno, msg)

    def _error(self, msg: str, lineno: Optional[int] = None) -> ConfigError:
        return ConfigError(msg, self.filename,
                           self._line() if lineno is None else lineno)

    def _attributes(self, kind: str, attr_list: List[str]) -> Dict[str, str]:
        """Known attributes by lower-case name; first occurrence wins."""
        known = _ATTRIBUTES[kind]
        values: Dict[str, str] = {}
        for key, value in zip(attr_list[::2], attr_list[1::2]):
            k = key.lower()
            if k not in known:
                self._warn("attribute '%s' of <%s> is not used" % (key, kind))
            elif k in values:
                self._warn("attribute '%s' of <%s> is given more than once, "
                           "using the first value" % (key, kind))
            else:
                values[k] = value
        return values

    # -- expat callbacks --------------------------------------------------

    def _start(self, name: str, attr_list: List[str]) -> None:
        parent = self.stack[-1] if self.stack else None
        if parent is not None and parent.kind is None:
            self.stack.append(_Frame(None))       # inside a skipped element
            return
        kind = name.lower()
        if kind not in _CHILDREN[parent.kind if parent else None]:
            self._warn("element '%s' is not used" % name)
            self.stack.append(_Frame(None))
            return
        attrs = self._attributes(kind, attr_list)
        handler = getattr(self, "_start_" + kind)
        self.stack.append(handler(parent, attrs, self._line()))

    def _end(self, name: str) -> None:
        frame = self.stack.pop()
        if frame.kind is not None:
            handler = getattr(self, "_end_" + frame.kind, None)
            if handler is not None:
                handler(frame)

    def _chardata(self, data: str) -> None:
        if data.strip(_C_SPACE):
            self._warn("unused character data")

    # -- elements ---------------------------------------------------------

    def _start_streams(self, parent, attrs, lineno):
        self.found_root = True
        return _Frame("streams", lineno=lineno)

    def _start_proc(self, parent, attrs, lineno):
        name = attrs.get("name", "")
        if not name:
            self._warn("proc name is not specified, <proc> ignored")
            return _Frame(None)
        if name in self.procs:
            self._warn("proc '%s' is already defined, second definition "
                       "ignored" % name)
            return _Frame(None)
        return _Frame("proc", _ProcBuilder(name, self.filename, lineno),
                      lineno)

    def _end_proc(self, frame):
        builder: _ProcBuilder = frame.obj
        self.procs[builder.proc.name] = _finish_proc(builder)

    def _start_using(self, parent, attrs, lineno):
        name = attrs.get("proc", "")
        if not name:
            raise self._error("<using> without a proc name")
        if name not in self.procs:
            raise self._error("<using>: proc '%s' is not defined (it must be "
                              "defined before it is used)" % name)
        parent.obj.using.append(self.procs[name])
        return _Frame("using", lineno=lineno)

    def _start_tree(self, parent, attrs, lineno):
        tree = Tree([], [], self.filename, lineno)
        parent.obj.own_trees.append(tree)
        return _Frame("tree", tree, lineno, extra=parent.obj)

    def _start_input(self, parent, attrs, lineno):
        name = attrs.get("name", "")
        if not name:
            raise self._error("input name is not specified")
        if "rate" not in attrs:
            raise self._error("input sample rate is not specified")
        try:
            num, den = parse_rate(attrs["rate"])
        except ValueError as exc:
            raise self._error("input %s: %s" % (name, exc)) from None
        if len(name) > MAX_INPUT_NAME:
            self._warn("input name '%s' is longer than %d characters and "
                       "can never match a plugin channel"
                       % (name, MAX_INPUT_NAME))
        inp = Input(name, attrs.get("channel", ""), attrs.get("location", ""),
                    num, den, self.filename, lineno)
        builder: _ProcBuilder = parent.extra
        if name in builder.own_names:
            self._warn("input '%s' is already defined in proc '%s' (line %s), "
                       "this one is ignored"
                       % (name, builder.proc.name,
                          builder.own_names[name].lineno))
        else:
            builder.own_names[name] = inp
            parent.obj.inputs.append(inp)
        return _Frame("input", inp, lineno)

    def _start_node(self, parent, attrs, lineno):
        node = Node(attrs.get("filter") or None, attrs.get("stream") or None,
                    [], self.filename, lineno)
        if (self.filters is not None and node.filter is not None
                and node.filter not in self.filters):
            raise self._error("filter '%s' is not defined" % node.filter)
        siblings = parent.obj.nodes if parent.kind == "tree" \
            else parent.obj.children
        siblings.append(node)
        return _Frame("node", node, lineno)

    # -- entry ------------------------------------------------------------

    def parse(self, data: Union[str, bytes]) -> None:
        try:
            self.parser.Parse(data, True)
        except xml.parsers.expat.ExpatError as exc:
            raise ConfigError(
                "malformed XML: %s (column %d)"
                % (xml.parsers.expat.ErrorString(exc.code), exc.offset + 1),
                self.filename, exc.lineno) from None
        if not self.found_root:
            raise ConfigError("root element 'streams' doesn't exist",
                              self.filename)


def _prune(nodes: List[Node]) -> List[Node]:
    """Drop subtrees without output streams (in place), return the list."""
    nodes[:] = [n for n in nodes if n.has_stream()]
    for n in nodes:
        _prune(n.children)
    return nodes


def _finish_proc(builder: _ProcBuilder) -> Proc:
    """Prune the own trees, then merge the ``<using>`` procs."""
    proc = builder.proc
    taken = set()
    for tree in builder.own_trees:
        _prune(tree.nodes)
        if not tree.nodes:
            # SeisComP erases inputs without streams, freeing their names
            # for merged procs.
            if tree.inputs:
                log.debug("%s:%s: tree without output streams ignored",
                          tree.filename, tree.lineno)
            continue
        if tree.inputs:
            proc.trees.append(tree)
            taken.update(i.name for i in tree.inputs)

    # Precedence among merged procs: the last <using> first.
    winners: Dict[int, set] = {}
    for index in reversed(range(len(builder.using))):
        mine = set()
        for tree in builder.using[index].trees:
            for inp in tree.inputs:
                if inp.name not in taken:
                    taken.add(inp.name)
                    mine.add(inp.name)
        winners[index] = mine

    for index, used in enumerate(builder.using):
        for tree in used.trees:
            inputs = [i for i in tree.inputs if i.name in winners[index]]
            if inputs:
                proc.trees.append(Tree(inputs, tree.nodes, tree.filename,
                                       tree.lineno))
    return proc


def parse_streams(data: Union[str, bytes], filename: str = "<string>",
                  filters: Optional[Dict[str, FirFilter]] = None,
                  procs: Optional[Dict[str, Proc]] = None) -> Dict[str, Proc]:
    """Parse the content of a ``streams.xml`` file.

    Procs are added to ``procs`` (a new dict if None), which is returned, so
    that several files can share definitions.  If ``filters`` is given,
    every ``filter=`` reference is checked against it (before pruning, as
    SeisComP does).  Raises ConfigError on malformed XML or definitions.
    """
    if procs is None:
        procs = {}
    _StreamsParser(filename, procs, filters).parse(data)
    return procs


def load_streams(paths: Union[PathArg, Iterable[PathArg]],
                 filters: Optional[Dict[str, FirFilter]] = None
                 ) -> Dict[str, Proc]:
    """Load one or more ``streams.xml`` files into one name -> Proc dict.

    ``paths`` is one path, a list, or a comma/space separated string like
    the ``streams`` key of seedlink.ini.  See parse_streams for ``filters``.
    """
    procs: Dict[str, Proc] = {}
    for path in split_file_list(paths):
        parse_streams(read_config_bytes(path), path, filters, procs)
    return procs


# ---------------------------------------------------------------------------
# Resolution against the filters
# ---------------------------------------------------------------------------

@dataclass
class ResolvedNode:
    """A node instantiated for one input: filter object and output rate."""

    node: Node
    filter: Optional[FirFilter]
    rate: Fraction
    channel: Optional[str]      # SEED channel (stream + input channel) or None
    location: str
    children: List["ResolvedNode"] = field(default_factory=list)

    @property
    def decimation(self) -> int:
        """Decimation factor of this node (1 for pass-through)."""
        return self.filter.decimation if self.filter is not None else 1

    def walk(self) -> Iterator["ResolvedNode"]:
        """This node and all descendants, depth first, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class ResolvedInput:
    """One input of a proc with its node tree resolved."""

    input: Input
    nodes: List[ResolvedNode]

    def streams(self) -> List[ResolvedNode]:
        """All nodes that produce an output stream, depth first."""
        return [n for top in self.nodes for n in top.walk()
                if n.channel is not None]


def _resolve_node(node: Node, parent_rate: Fraction, inp: Input,
                  filters: Dict[str, FirFilter]) -> ResolvedNode:
    fir = None
    if node.filter is not None:
        fir = filters.get(node.filter)
        if fir is None:
            raise ConfigError("filter '%s' is not defined" % node.filter,
                              node.filename, node.lineno)
    rate = node_output_rate(parent_rate, fir.decimation if fir else 1)
    resolved = ResolvedNode(
        node, fir, rate,
        node.stream + inp.channel if node.stream else None, inp.location)
    resolved.children = [_resolve_node(c, rate, inp, filters)
                         for c in node.children]
    return resolved


def resolve_proc(proc: Proc, filters: Dict[str, FirFilter]
                 ) -> Dict[str, ResolvedInput]:
    """Instantiate every input of ``proc``: filters looked up, rates computed.

    Returns input name -> ResolvedInput.  Raises ConfigError (naming the
    node's file and line) if a referenced filter is missing.
    """
    result = {}
    for tree in proc.trees:
        for inp in tree.inputs:
            result[inp.name] = ResolvedInput(
                inp, [_resolve_node(n, inp.rate, inp, filters)
                      for n in tree.nodes])
    return result


def check_filters(procs: Dict[str, Proc],
                  filters: Dict[str, FirFilter]) -> None:
    """Raise ConfigError if any proc references a filter not in ``filters``."""
    for proc in procs.values():
        resolve_proc(proc, filters)

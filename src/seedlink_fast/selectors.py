"""SeedLink 3 stream selectors (``SELECT`` arguments) and station patterns.

Grammar, as SeisComP's seedlink parses a selector (``[!][LL]CCC[.T]`` or
``[!]T``):

* an optional leading ``!`` makes the selector negative;
* the part before the first ``.`` (after the ``!``) may only hold the
  characters ``A-Z 0-9 ?`` (upper case only; ``*``, ``-``, blanks, lower case
  are rejected);
* 5 characters: location (2) + channel (3); 3 characters: channel, the
  location is ``??``;
* any other length is only accepted *without* a dot, and then the whole part
  is a type letter: so ``D`` or ``!L`` select by type alone (location ``??``,
  channel ``???``).  Because of the character check above, a type given
  alone must be upper case;
* the type after the dot must be exactly one of ``D E C T L O`` (either
  case); no dot = any type.  ``BHZ.`` (empty type), ``BHZ.DD``, ``.D`` and
  ``BH.D`` are errors.

Matching a record: location and channel from the fixed header (trailing
blanks removed); each template position that is not ``?`` must equal the
record's character, a missing character counting as a blank.  So a blank
location is matched by ``??`` (or an omitted location) only.

Set decision: no selector -> everything; any matching negative selector ->
rejected; else, with at least one positive selector, accepted iff one of them
matches; with only negative selectors, accepted.  Records whose first byte
is NUL ("blank" records) and records whose type cannot be determined never
match, not even an empty set.

``station_pattern_matches`` implements the SeedLink 3.1 ``NSWILDCARD``
extension (``?`` one character, ``*`` any run, case-insensitive, anchored at
both ends) for servers that offer it.
"""

from .records import record_type

__all__ = [
    "MAX_SELECTORS", "TYPES", "Selector", "SelectorSet", "parse_selector",
    "station_pattern_matches", "has_station_wildcard",
]

#: SeisComP's per-station-sub-session limit (``MAXSEL``); the 101st add fails.
MAX_SELECTORS = 100

#: Record types in SeisComP's order (also the INFO sort order).
TYPES = "DECTLO"

_PATTERN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789?")
_TYPE_LETTERS = {c: c for c in TYPES}
_TYPE_LETTERS.update({c.lower(): c for c in TYPES})

_BLANK = 0x20


def _type_letter(text):
    """The type of a selector: None (any) for no type, else the upper-case
    letter; ValueError when it is not exactly one of DECTLO (either case)."""
    if text is None:
        return None
    letter = _TYPE_LETTERS.get(text) if len(text) == 1 else None
    if letter is None:
        raise ValueError("invalid selector type %r" % (text,))
    return letter


class Selector:
    """One parsed selector.  Immutable; compare by ``normalized``."""

    __slots__ = ("negative", "location", "channel", "type", "normalized", "_fixed", "_fixed_bytes")

    def __init__(self, negative, location, channel, type_=None):
        if len(location) != 2 or len(channel) != 3:
            raise ValueError("location must have 2 and channel 3 characters")
        if type_ is not None and type_ not in TYPES:
            raise ValueError("invalid selector type %r" % (type_,))
        object.__setattr__(self, "negative", bool(negative))
        object.__setattr__(self, "location", location)
        object.__setattr__(self, "channel", channel)
        object.__setattr__(self, "type", type_)
        object.__setattr__(self, "normalized", "%s%s%s.%s" % (
            "!" if negative else "", location, channel, type_ or "?"))
        template = location + channel
        fixed = tuple((i, c) for i, c in enumerate(template) if c != "?")
        object.__setattr__(self, "_fixed", fixed)
        object.__setattr__(self, "_fixed_bytes", tuple((i, ord(c)) for i, c in fixed))

    def __setattr__(self, name, value):
        raise AttributeError("Selector is immutable")

    def __repr__(self):
        return "Selector(%r)" % self.normalized

    def __eq__(self, other):
        if isinstance(other, Selector):
            return self.normalized == other.normalized
        return NotImplemented

    def __hash__(self):
        return hash(self.normalized)

    def _match_key(self, key, rtype):
        # key: the 5 characters location(2) + channel(3), blank padded
        if self.type is not None and self.type != rtype:
            return False
        for i, c in self._fixed:
            if key[i] != c:
                return False
        return True

    def _match_raw(self, raw, rtype):
        # raw: the 5 header bytes 13..17 (location + channel), NUL-cleaned
        if self.type is not None and self.type != rtype:
            return False
        for i, c in self._fixed_bytes:
            if raw[i] != c:
                return False
        return True

    def matches(self, location, channel, type_):
        """Does this selector (ignoring its sign) match the stream?"""
        return self._match_key(_key(location, channel), type_)


def _cstr(text):
    # SeisComP hands the stripped header fields around as C strings
    nul = text.find("\0")
    return text if nul < 0 else text[:nul]


def _key(location, channel):
    """location + channel, each blank padded to its width (2 and 3)."""
    location = _cstr(location)
    channel = _cstr(channel)
    return location[:2].ljust(2) + channel[:3].ljust(3)


def parse_selector(text):
    """Parse one SELECT argument; ValueError when SeisComP would say ERROR."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("latin-1")
    if not isinstance(text, str):
        raise ValueError("selector must be a string, got %r" % (type(text).__name__,))
    dot = text.find(".")
    if dot >= 0:
        body, type_text = text[:dot], text[dot + 1:]
    else:
        body, type_text = text, None
    negative = body.startswith("!")
    if negative:
        body = body[1:]
    for c in body:
        if c not in _PATTERN_CHARS:
            raise ValueError("invalid character %r in selector %r" % (c, text))
    n = len(body)
    if n == 5:
        location, channel, type_ = body[:2], body[2:], _type_letter(type_text)
    elif n == 3:
        location, channel, type_ = "??", body, _type_letter(type_text)
    elif type_text is None:
        location, channel, type_ = "??", "???", _type_letter(body)
    else:
        raise ValueError("invalid selector %r" % (text,))
    return Selector(negative, location, channel, type_)


class SelectorSet:
    """The selectors of one station sub-session, in the order given."""

    __slots__ = ("_selectors", "_positive", "_negative")

    def __init__(self, selectors=()):
        self._selectors = []
        self._positive = []
        self._negative = []
        for s in selectors:
            self.add(s)

    def add(self, selector):
        """Add a selector (text or Selector); ValueError when it is invalid or
        the set already holds MAX_SELECTORS.  Returns the Selector."""
        if len(self._selectors) >= MAX_SELECTORS:
            raise ValueError("too many selectors (max %d)" % MAX_SELECTORS)
        sel = selector if isinstance(selector, Selector) else parse_selector(selector)
        self._selectors.append(sel)
        (self._negative if sel.negative else self._positive).append(sel)
        return sel

    def clear(self):
        self._selectors.clear()
        self._positive.clear()
        self._negative.clear()

    def __len__(self):
        return len(self._selectors)

    def __iter__(self):
        return iter(self._selectors)

    def __getitem__(self, index):
        return self._selectors[index]

    def __repr__(self):
        return "SelectorSet(%r)" % ([s.normalized for s in self._selectors],)

    @property
    def normalized(self):
        """The patterns as INFO CONNECTIONS shows them, in order."""
        return [s.normalized for s in self._selectors]

    def copy(self):
        return SelectorSet(self._selectors)

    def matches(self, location, channel, type_):
        """SeisComP's decision for a stream (location, channel, type letter);
        location/channel with trailing blanks removed (or not: blanks and
        missing characters compare the same)."""
        if type_ is None:
            return False
        if not self._selectors:
            return True
        key = _key(location, channel)
        for sel in self._negative:
            if sel._match_key(key, type_):
                return False
        if not self._positive:
            return True
        for sel in self._positive:
            if sel._match_key(key, type_):
                return True
        return False

    def matches_record(self, record):
        """The decision for a stored 512-byte record: blank records and
        records of undeterminable type never match."""
        if not record or record[0] == 0:
            return False
        rtype = record_type(record)
        if rtype is None:
            return False
        if not self._selectors:
            return True
        raw = bytes(record[13:18])
        if 0 in raw:
            raw = _clean_raw(raw)
        for sel in self._negative:
            if sel._match_raw(raw, rtype):
                return False
        if not self._positive:
            return True
        for sel in self._positive:
            if sel._match_raw(raw, rtype):
                return True
        return False


def _clean_raw(raw):
    # a NUL in the location or channel ends that C string: the rest counts as blanks
    loc, chn = raw[:2], raw[2:]
    loc = loc.split(b"\0", 1)[0].ljust(2)
    chn = chn.split(b"\0", 1)[0].ljust(3)
    return loc + chn


_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def has_station_wildcard(text):
    """True when a STATION/network argument uses the 3.1 wildcards."""
    return "?" in text or "*" in text


def station_pattern_matches(pattern, name):
    """SeedLink 3.1 NSWILDCARD match of a station or network name: ``?`` is
    any one character, ``*`` any run (also empty); case-insensitive; the
    whole name must match."""
    p = pattern.translate(_ASCII_UPPER)
    s = name.translate(_ASCII_UPPER)
    np_, ns = len(p), len(s)
    i = j = 0
    star = -1
    mark = 0
    while j < ns:
        if i < np_ and (p[i] == "?" or p[i] == s[j]):
            i += 1
            j += 1
        elif i < np_ and p[i] == "*":
            star = i
            mark = j
            i += 1
        elif star >= 0:
            i = star + 1
            mark += 1
            j = mark
        else:
            return False
    while i < np_ and p[i] == "*":
        i += 1
    return i == np_

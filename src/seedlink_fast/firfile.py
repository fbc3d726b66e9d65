"""Reader for SeisComP's ``filters.fir`` (FIR decimation filter coefficients).

File layout, read as a stream of tokens the way SeisComP's C++ iostream code
does it:

* the number of filters (first token of the first line, rest of line ignored);
* per filter four header lines, each "first token, rest of line ignored":
  name, length (number of taps), digital gain (float), decimation factor (int);
* then the coefficients as whitespace separated floats in any line layout:
  all ``length`` taps for minimum-phase filters (name ending in ``M``), only
  the first ``ceil(length / 2)`` taps for symmetric zero-phase filters.

The iostream quirks that make a difference are reproduced: numbers are read
as the longest numeric prefix of a token (``50abc`` reads as 50 on a header
line), blank lines before a header value are skipped, and the text following
a header value must fit into ``ignore(100, '\\n')``, i.e. together with its
newline be shorter than 100 characters.  Where SeisComP would crash or
misbehave (non-positive length or decimation) we raise ConfigError instead.
"""

import bisect
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

#: Longest filter SeisComP accepts.
MAX_FILTER_LENGTH = 10000

#: ``istream::ignore(100, '\n')``: the rest of a header line, newline
#: included, must be shorter than this.
HEADER_REST_LIMIT = 100

# C isspace() characters; iostream extraction skips exactly these.
_WS = " \t\n\v\f\r"
_TOKEN_RE = re.compile(r"[^ \t\n\v\f\r]+")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
                       r"(?:[eE][+-]?[0-9]+)?")

PathArg = Union[str, "os.PathLike[str]"]


@dataclass(eq=False)
class FirFilter:
    """One FIR filter of a ``filters.fir`` file.

    ``taps`` always holds the full kernel of ``length`` weights, applied as
    ``sum(x[oldest + k] * taps[k] * gain)``: for minimum-phase filters the
    taps in file order, for zero-phase filters the stored half followed by
    its mirror image (centre tap not repeated for odd lengths).
    """

    name: str
    length: int
    gain: float
    decimation: int
    minimum_phase: bool
    taps: np.ndarray = field(repr=False)
    filename: Optional[str] = None
    lineno: Optional[int] = None

    @property
    def shift(self) -> float:
        """Delay of the output time stamp in input samples.

        Zero-phase outputs are stamped at the window centre
        (``length / 2 - 0.5`` samples after the oldest sample); minimum-phase
        outputs carry the time of the oldest sample.
        """
        return 0.0 if self.minimum_phase else self.length / 2.0 - 0.5

    def __eq__(self, other):
        # Same definition, wherever it was read from.
        if not isinstance(other, FirFilter):
            return NotImplemented
        header = (self.name, self.length, self.gain, self.decimation,
                  self.minimum_phase)
        other_header = (other.name, other.length, other.gain,
                        other.decimation, other.minimum_phase)
        return header == other_header and np.array_equal(self.taps,
                                                         other.taps)


def is_minimum_phase(name: str) -> bool:
    """SeisComP's rule: a filter whose name ends in ``M`` is minimum phase."""
    return name.endswith("M")


def stored_tap_count(length: int, minimum_phase: bool) -> int:
    """Number of coefficients stored in the file for ``length`` taps."""
    return length if minimum_phase else length // 2 + length % 2


def expand_taps(stored, length: int, minimum_phase: bool) -> np.ndarray:
    """Build the full kernel from the coefficients as stored in the file."""
    half = np.asarray(stored, dtype=np.float64)
    if minimum_phase:
        return half.copy()
    # Odd length: the last stored tap is the centre and appears only once.
    mirrored = half[: length // 2][::-1]
    return np.concatenate([half, mirrored])


class _TokenReader:
    """Minimal emulation of the ``std::ifstream`` reads SeisComP performs."""

    def __init__(self, text: str, filename: str):
        self.text = text
        self.filename = filename
        self.pos = 0
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]

    def lineno(self, pos: Optional[int] = None) -> int:
        if pos is None:
            pos = self.pos
        return bisect.bisect_left(self._newlines, pos) + 1

    def error(self, reason: str, pos: Optional[int] = None) -> ConfigError:
        return ConfigError(reason, self.filename, self.lineno(pos))

    def skip_ws(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in _WS:
            self.pos += 1

    def at_eof(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def read(self, regex, what: str) -> str:
        """Extract the longest prefix matching ``regex`` after whitespace."""
        self.skip_ws()
        if self.pos >= len(self.text):
            raise self.error("unexpected end of file, expected %s" % what)
        m = regex.match(self.text, self.pos)
        if not m:
            bad = _TOKEN_RE.match(self.text, self.pos).group()
            raise self.error("expected %s, found %r" % (what, bad))
        self.pos = m.end()
        return m.group()

    def skip_rest_of_header_line(self, what: str) -> None:
        """``ignore(100, '\\n')`` with SeisComP's "line too long" check."""
        nl = self.text.find("\n", self.pos)
        rest = (nl + 1 if nl >= 0 else len(self.text)) - self.pos
        if rest >= HEADER_REST_LIMIT:
            raise self.error("%s line is too long (the text after the value "
                             "must be shorter than %d characters)"
                             % (what, HEADER_REST_LIMIT - 1))
        self.pos += rest

    def header_int(self, what: str) -> int:
        start = self.pos
        value = int(self.read(_INT_RE, what))
        if not -2**31 <= value < 2**31:
            raise self.error("%s %d is out of range" % (what, value), start)
        self.skip_rest_of_header_line(what)
        return value

    def header_float(self, what: str) -> float:
        value = float(self.read(_FLOAT_RE, what))
        self.skip_rest_of_header_line(what)
        return value

    def header_token(self, what: str) -> str:
        value = self.read(_TOKEN_RE, what)
        self.skip_rest_of_header_line(what)
        return value


def parse_filters(text: str, filename: str = "<string>",
                  filters: Optional[Dict[str, FirFilter]] = None
                  ) -> Dict[str, FirFilter]:
    """Parse the text of a ``filters.fir`` file.

    New filters are added to ``filters`` (a fresh dict if None), which is
    returned; a name that is already present is reported with a warning and
    the earlier definition is kept, as SeisComP does.  Raises ConfigError
    (with file name and line) on malformed input.
    """
    if filters is None:
        filters = {}
    rd = _TokenReader(text, filename)
    count = rd.header_int("number of filters")
    if count < 0:
        log.warning("%s:1: negative number of filters (%d), no filters read",
                    filename, count)
        count = 0

    for index in range(count):
        if rd.at_eof():
            raise rd.error("unexpected end of file: %d filters announced, "
                           "only %d found" % (count, index))
        name_pos = rd.pos
        name = rd.header_token("filter name")
        length = rd.header_int("filter length")
        gain = rd.header_float("digital gain")
        decimation = rd.header_int("decimation factor")

        if length < 1 or decimation < 1:
            raise rd.error("filter %s: length (%d) and decimation factor (%d) "
                           "must be positive" % (name, length, decimation),
                           name_pos)
        if length > MAX_FILTER_LENGTH or length < decimation:
            raise rd.error("filter %s: length %d must be between the "
                           "decimation factor %d and %d"
                           % (name, length, decimation, MAX_FILTER_LENGTH),
                           name_pos)

        minimum_phase = is_minimum_phase(name)
        n_stored = stored_tap_count(length, minimum_phase)
        stored = np.empty(n_stored, dtype=np.float64)
        for j in range(n_stored):
            try:
                stored[j] = float(rd.read(_FLOAT_RE, "coefficient"))
            except ConfigError as exc:
                raise ConfigError("filter %s: coefficient %d of %d: %s"
                                  % (name, j + 1, n_stored, exc.reason),
                                  exc.filename, exc.lineno) from None

        if name in filters:
            # SeisComP reads (and discards) the coefficients before this check.
            log.warning("%s:%d: filter %s has been already defined, keeping "
                        "the first definition", filename,
                        rd.lineno(name_pos), name)
            continue

        filters[name] = FirFilter(
            name=name, length=length, gain=gain, decimation=decimation,
            minimum_phase=minimum_phase,
            taps=expand_taps(stored, length, minimum_phase),
            filename=filename, lineno=rd.lineno(name_pos))
        log.debug("filter %s, length %d, decimation factor %d, digital "
                  "gain %g", name, length, decimation, gain)

    if not rd.at_eof():
        # SeisComP stops reading after the announced count.
        log.warning("%s:%d: data after the %d announced filters is ignored",
                    filename, rd.lineno(), count)
    return filters


def split_file_list(value: Union[PathArg, Iterable[PathArg]]) -> List[str]:
    """Turn a ``filters``/``streams`` value into a list of paths.

    A string is split at commas and spaces like SeisComP's list parameters;
    a path object or each element of a list/tuple is taken as one path.
    """
    if isinstance(value, str):
        return [p for p in re.split(r"[, ]+", value) if p]
    if isinstance(value, os.PathLike):
        return [os.fspath(value)]
    paths = []
    for item in value:
        paths.append(os.fspath(item))
    return paths


def load_filters(paths: Union[PathArg, Iterable[PathArg]]
                 ) -> Dict[str, FirFilter]:
    """Load one or more ``filters.fir`` files into one name -> FirFilter dict.

    ``paths`` is one path, a list of paths, or a comma/space separated string
    like the ``filters`` key of seedlink.ini.  Files are read in order; the
    first definition of a name wins.
    """
    filters: Dict[str, FirFilter] = {}
    for path in split_file_list(paths):
        # Latin-1 maps every byte, like the byte-oriented C++ reader.
        parse_filters(read_config_bytes(path).decode("latin-1"), path, filters)
    return filters


def read_config_bytes(path) -> bytes:
    """A configuration file's bytes; ConfigError naming it if unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError("cannot open file: %s" % exc.strerror, path) from None


def default_filters_path() -> Path:
    """Path of the ``filters.fir`` shipped with the package (SeisComP's)."""
    return Path(str(resources.files("seedlink_fast") / "data" / "filters.fir"))

"""SELECT grammar, matching rules and SeedLink 3.1 station patterns."""
import re

import pytest
from hypothesis import given, settings, strategies as st

from seedlink_fast import selectors as sel
from seedlink_fast._ext import mseed as _mseed
from seedlink_fast.selectors import (MAX_SELECTORS, Selector, SelectorSet,
                                     has_station_wildcard, parse_selector,
                                     station_pattern_matches)

# --------------------------------------------------------------------------
# grammar

ACCEPT = [
    ("BHZ", "??BHZ.?"),
    ("BHZ.D", "??BHZ.D"),
    ("BHZ.d", "??BHZ.D"),          # the type after a dot is case-insensitive
    ("00BHZ", "00BHZ.?"),
    ("00BHZ.D", "00BHZ.D"),
    ("10LHZ.c", "10LHZ.C"),
    ("LOG.L", "??LOG.L"),
    ("!LOG", "!??LOG.?"),           # the INFO CONNECTIONS example
    ("!LOG.L", "!??LOG.L"),
    ("??B?Z", "??B?Z.?"),
    ("?????", "?????.?"),
    ("???", "?????.?"),
    ("1?A9C.O", "1?A9C.O"),
    ("!???.E", "!?????.E"),
    ("D", "?????.D"),               # type alone
    ("E", "?????.E"),
    ("C", "?????.C"),
    ("T", "?????.T"),
    ("L", "?????.L"),
    ("O", "?????.O"),
    ("!L", "!?????.L"),
    ("HHZ.t", "??HHZ.T"),
    ("999", "??999.?"),
]

REJECT = [
    "", "!", "!!", ".", ".D", "!.D", "BH.D", "BH", "B", "BHZZ", "00BHZ1",
    "BHZ.", "00BHZ.", "BHZ.DD", "BHZ.X", "BHZ.?", "BHZ.D.D", "BHZ..D",
    "bhz", "Bhz", "00bhz", "d", "l", "!d",        # upper case only (also a lone type)
    "BHZ*", "*", "B-Z", "B Z", " BHZ", "BHZ ", "BH\tZ", "BHZ\x00",
    "?", "X", "1", "Z", "!Z", "!!BHZ", "BHZ!", "ÄHZ", "BHZ.Ä", "BHZ.ı",
    "BHZ.D ", "LOG.L\x00",
]


@pytest.mark.parametrize("text,normalized", ACCEPT)
def test_accept(text, normalized):
    s = parse_selector(text)
    assert s.normalized == normalized
    assert isinstance(s, Selector)
    assert s.negative == text.startswith("!")


@pytest.mark.parametrize("text", REJECT)
def test_reject(text):
    with pytest.raises(ValueError):
        parse_selector(text)


def test_bytes_and_non_strings():
    assert parse_selector(b"BHZ.D").normalized == "??BHZ.D"
    with pytest.raises(ValueError):
        parse_selector(None)
    with pytest.raises(ValueError):
        parse_selector(5)


def test_selector_fields_and_immutability():
    s = parse_selector("!00BHZ.E")
    assert (s.negative, s.location, s.channel, s.type) == (True, "00", "BHZ", "E")
    assert parse_selector("BHZ").type is None
    assert s == parse_selector("!00BHZ.e")
    assert hash(s) == hash(parse_selector("!00BHZ.e"))
    assert s != parse_selector("00BHZ.E")
    with pytest.raises(AttributeError):
        s.negative = False
    with pytest.raises(ValueError):
        Selector(False, "0", "BHZ")
    with pytest.raises(ValueError):
        Selector(False, "00", "BHZ", "X")


# --------------------------------------------------------------------------
# matching one selector


@pytest.mark.parametrize("pattern,loc,chn,typ,expected", [
    ("BHZ", "", "BHZ", "D", True),
    ("BHZ", "00", "BHZ", "D", True),
    ("BHZ", "00", "BHZ", "L", True),
    ("BHZ.D", "00", "BHZ", "E", False),
    ("BHZ.D", "", "BHN", "D", False),
    ("00BHZ", "", "BHZ", "D", False),      # blank location only via ?? / omitted
    ("00BHZ", "00", "BHZ", "D", True),
    ("00BHZ", "10", "BHZ", "D", False),
    ("?0BHZ", "10", "BHZ", "D", True),
    ("0?BHZ", "0", "BHZ", "D", True),      # missing second char compares as blank
    ("00BHZ", "0", "BHZ", "D", False),
    ("LO?", "", "LO", "L", True),
    ("LOG", "", "LO", "L", False),
    ("B??", "", "B", "D", True),
    ("D", "", "LOG", "D", True),
    ("D", "", "LOG", "L", False),
    ("L", "", "LOG", "L", True),
    ("?????", "", "", "O", True),
])
def test_single_match(pattern, loc, chn, typ, expected):
    s = parse_selector(pattern)
    assert s.matches(loc, chn, typ) is expected
    # trailing blanks are the same as missing characters
    assert s.matches(loc.ljust(2), chn.ljust(3), typ) is expected


# --------------------------------------------------------------------------
# sets


def _set(*patterns):
    return SelectorSet(patterns)


def test_empty_set_matches_everything():
    s = SelectorSet()
    assert len(s) == 0
    assert s.matches("", "BHZ", "D")
    assert s.matches("00", "LOG", "L")
    assert not s.matches("", "BHZ", None)      # undeterminable type never matches


def test_positive_only():
    s = _set("BHZ.D", "00HHZ")
    assert s.matches("", "BHZ", "D")
    assert s.matches("00", "HHZ", "E")
    assert not s.matches("", "HHZ", "D")
    assert not s.matches("", "BHZ", "L")


def test_negative_only_accepts_the_rest():
    s = _set("!LOG")
    assert not s.matches("", "LOG", "L")
    assert not s.matches("00", "LOG", "D")
    assert s.matches("", "BHZ", "D")
    assert s.matches("", "ACE", "L")


def test_negative_wins_over_positive_in_any_order():
    for patterns in (("BH?", "!BHN"), ("!BHN", "BH?")):
        s = _set(*patterns)
        assert s.matches("", "BHZ", "D")
        assert not s.matches("", "BHN", "D")
        assert not s.matches("", "HHZ", "D")      # positive set, no positive match


def test_mixed_type_rules():
    s = _set("D", "!L", "LOG.L")
    assert s.matches("", "BHZ", "D")
    assert not s.matches("", "LOG", "L")        # negative beats the positive LOG.L
    assert not s.matches("", "BHZ", "E")        # positives exist, none matches


def test_cap_of_100():
    s = SelectorSet()
    for i in range(MAX_SELECTORS):
        s.add("%03d" % i)
    assert len(s) == 100
    with pytest.raises(ValueError):
        s.add("BHZ")
    with pytest.raises(ValueError):
        s.add("!LOG")
    assert len(s) == 100
    s.clear()
    assert len(s) == 0
    s.add("BHZ")
    assert s.normalized == ["??BHZ.?"]


def test_invalid_add_leaves_set_unchanged():
    s = _set("BHZ")
    with pytest.raises(ValueError):
        s.add("bhz")
    assert s.normalized == ["??BHZ.?"]


def test_normalized_list_order_and_copy():
    s = _set("BHZ.D", "!LOG", "00HH?.e", "D")
    assert s.normalized == ["??BHZ.D", "!??LOG.?", "00HH?.E", "?????.D"]
    assert [x.normalized for x in s] == s.normalized
    assert s[1].negative
    c = s.copy()
    c.clear()
    assert len(s) == 4


# --------------------------------------------------------------------------
# records


def _data_record(loc="", chn="BHZ", blank=False):
    rec = bytearray(512)
    _mseed.write_header(rec, "XX", "TEST", loc, chn, 1, 1_700_000_000_000_000, 100, 20, 1, 11,
                        timing_quality=100)
    if blank:
        rec[0] = 0
    return bytes(rec)


def _log_record():
    return _mseed.write_log_record("XX", "TEST", 1_700_000_000_000_000, b"hello")


def test_matches_record():
    d = _data_record()
    d00 = _data_record("00", "HHZ")
    log = _log_record()
    assert SelectorSet().matches_record(d)
    assert _set("BHZ.D").matches_record(d)
    assert not _set("BHZ.L").matches_record(d)
    assert not _set("00BHZ").matches_record(d)
    assert _set("00HHZ.D").matches_record(d00)
    assert _set("??HHZ").matches_record(d00)
    assert _set("LOG.L").matches_record(log)
    assert not _set("!LOG").matches_record(log)
    assert _set("!LOG").matches_record(d)
    assert _set("L").matches_record(log)
    assert not _set("D").matches_record(log)


def test_blank_and_undeterminable_records_never_match():
    blank = _data_record(blank=True)
    assert not SelectorSet().matches_record(blank)
    assert not _set("!LOG").matches_record(blank)
    broken = bytearray(_data_record())
    broken[46:48] = b"\x03\x00"                   # first blockette outside the record
    assert not SelectorSet().matches_record(bytes(broken))
    assert not SelectorSet().matches_record(b"")


def test_record_with_nul_in_location():
    rec = bytearray(_data_record("00"))
    rec[13:15] = b"\x00\x00"                      # C string ends there: compares as blanks
    assert _set("??BHZ").matches_record(bytes(rec))
    assert not _set("00BHZ").matches_record(bytes(rec))
    assert _set("??BHZ").matches("\x00\x00", "BHZ", "D")


# --------------------------------------------------------------------------
# property tests against a transliteration of SeisComP's C logic

def _c_match_helper(tmpl, s, n):
    # the template has no NULs; the record string advances only while non-NUL
    j = 0
    for i in range(n):
        ch = s[j] if j < len(s) and s[j] != "\0" else None
        if tmpl[i] != "?" and (ch if ch is not None else " ") != tmpl[i]:
            return False
        if ch is not None:
            j += 1
    return True


def _c_filter(patterns, loc, chn, typ):
    parsed = [parse_selector(p) for p in patterns]
    if not parsed:
        return True
    default_rule, result = True, False
    for s in parsed:
        m = ((s.type is None or s.type == typ)
             and _c_match_helper(s.location, loc, 2) and _c_match_helper(s.channel, chn, 3))
        if s.negative:
            if m:
                return False
        else:
            default_rule = False
            result |= m
    return default_rule or result


_sel_chars = st.sampled_from("AB0?")
_selector_text = st.builds(
    lambda neg, body, t: ("!" if neg else "") + body + ("." + t if t else ""),
    st.booleans(),
    st.one_of(st.text(_sel_chars, min_size=5, max_size=5), st.text(_sel_chars, min_size=3, max_size=3)),
    st.sampled_from(["", "D", "L", "e"]))
_stream_text = st.text(st.sampled_from("AB0 "), max_size=3)


@settings(max_examples=400, deadline=None)
@given(st.lists(_selector_text, max_size=5), st.text(st.sampled_from("AB0"), max_size=2),
       st.text(st.sampled_from("AB0"), max_size=3), st.sampled_from("DLE"))
def test_set_matches_like_seiscomp(patterns, loc, chn, typ):
    s = SelectorSet(patterns)
    assert s.matches(loc, chn, typ) == _c_filter(patterns, loc, chn, typ)
    # and through a real record header (trailing blanks stripped by the server)
    rec = bytearray(_data_record())
    rec[13:15] = loc.ljust(2).encode()
    rec[15:18] = chn.ljust(3).encode()
    if typ == "D":
        assert s.matches_record(bytes(rec)) == s.matches(loc, chn, "D")


_fuzz_alphabet = st.sampled_from(list("!.?ABDELOTCZ09bdlz*- \t\x00é") + ["\ud800"])


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(_fuzz_alphabet, max_size=9), st.text(max_size=12)))
def test_parse_selector_fuzz(text):
    try:
        s = parse_selector(text)
    except ValueError:
        return
    assert re.fullmatch(r"!?[A-Z0-9?]{5}\.[DECTLO?]", s.normalized)
    # re-parsing the normalised form (without an "any type" suffix) is stable
    norm = s.normalized[:-2] if s.normalized.endswith(".?") else s.normalized
    assert parse_selector(norm) == s


# --------------------------------------------------------------------------
# SeedLink 3.1 station / network wildcards

@pytest.mark.parametrize("pattern,name,expected", [
    ("APE", "APE", True),
    ("ape", "APE", True),
    ("APE", "ape", True),
    ("AP?", "APE", True),
    ("AP?", "AP", False),
    ("?", "", False),
    ("*", "", True),
    ("*", "ANYTHING", True),
    ("**", "", True),
    ("A*E", "AE", True),
    ("A*E", "ABCDE", True),
    ("A*E", "ABCDEF", False),
    ("*A*", "XAX", True),
    ("*A*", "XBX", False),
    ("GE", "GEE", False),
    ("", "", True),
    ("", "A", False),
    ("A?*C", "ABXYC", True),
    ("A?*C", "AC", False),
    ("[A]", "A", False),                 # no character classes
    ("[A]", "[A]", True),
])
def test_station_pattern_table(pattern, name, expected):
    assert station_pattern_matches(pattern, name) is expected


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("AB?*a."), max_size=7), st.text(st.sampled_from("ABab."), max_size=7))
def test_station_pattern_against_regex(pattern, name):
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.upper())
    assert station_pattern_matches(pattern, name) == bool(re.fullmatch(rx, name.upper(), re.S))


def test_has_station_wildcard():
    assert has_station_wildcard("AP*")
    assert has_station_wildcard("A?E")
    assert not has_station_wildcard("APE")


def test_module_constants():
    assert sel.TYPES == "DECTLO"
    assert MAX_SELECTORS == 100

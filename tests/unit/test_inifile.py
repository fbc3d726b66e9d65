"""Tests of the seedlink.ini reader (seedlink_fast.inifile)."""

import dataclasses
import logging
import re
from pathlib import Path

import pytest

from seedlink_fast.errors import ConfigError
from seedlink_fast.inifile import (INFO_LEVELS, GlobalConfig, check_procs,
                                   load_ini, parse_ini, parse_ip_acl)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE = SHARED / "reference"
GOLDEN_CASES = {
    # case: (station key, proc, gap_check_pattern, gap_treshold, filters?)
    "stream100_steim2": ("XX.GOLD", "stream100", "XXXXX", 500000, True),
    "highrate_4000": ("XX.FAST", "hr4000", "FH|CH|DH|EH|SH|DL", 100, True),
    "mseed_passthrough": ("XX.PASS", None, ".", 100000, False),
}


@pytest.fixture
def reference():
    if not REFERENCE.is_dir():
        pytest.skip("shared reference data not available")
    return REFERENCE


def ini(body, **kw):
    """Parse a [seedlink] section with the given body."""
    return parse_ini("[seedlink]\n" + body, "test.ini", **kw)


# --------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_ini(reference, case, caplog):
    key, proc, pattern, treshold, has_sproc = GOLDEN_CASES[case]
    path = reference / "golden" / case / "seedlink.ini"
    with caplog.at_level(logging.WARNING, logger="seedlink_fast.inifile"):
        cfg = load_ini(path)
    g = cfg.globals
    # port = @PORT@ is not a number: warned about, compiled default kept.
    assert g.port == 18000
    assert [r.getMessage() for r in caplog.records] == [
        "%s:%d: [port] @PORT@ is not an integer"
        % (path, 11 if case == "mseed_passthrough" else 13)]
    assert cfg.warnings == [r.getMessage() for r in caplog.records]
    assert (g.organization, g.network, g.filebase) == (
        "Golden Vectors", "XX", "@FILEBASE@")
    assert (g.encoding, g.trusted, g.access) == (
        "steim2", ["127.0.0.0/8"], ["0.0.0.0/0"])
    assert (g.info, g.info_trusted, g.info_level) == ("streams", "all", 3)
    assert g.window_extraction and g.window_extraction_trusted
    assert not g.websocket and not g.websocket_trusted
    assert g.stream_check and g.request_log
    assert (g.gap_check_pattern, g.gap_treshold) == (pattern, treshold)
    assert (g.buffers, g.segments, g.segsize, g.blanks) == (100, 50, 10000, 10)
    assert (g.seq_gap_limit, g.connections, g.connections_per_ip,
            g.bytespersec) == (100000, 500, 20, 0)
    assert (g.proc_gap_warn, g.proc_gap_flush, g.proc_gap_reset) == (
        10, 100000, 1000000)
    assert g.backfill_buffer == 0.0
    assert (g.plugin_timeout, g.plugin_start_retry,
            g.plugin_shutdown_wait) == (0, 0, 5)
    assert (g.filters, g.streams) == ((["@FILTERS@"], ["@STREAMS@"])
                                      if has_sproc else ([], []))

    assert [p.name for p in cfg.plugins] == ["replay"]
    replay = cfg.plugins[0]
    assert (replay.cmd, replay.timeout, replay.start_retry,
            replay.shutdown_wait, replay.proc) == ("@PLUGIN@", 0, 0, 5, None)

    assert [s.key for s in cfg.stations] == [".dummy", key]
    dummy, station = cfg.stations
    assert (dummy.name, dummy.network, dummy.description, dummy.access) == (
        ".dummy", "XX", "Golden Vectors", ["0.0.0.0"])
    assert (station.name, station.network, station.proc) == (
        key.split(".")[1], "XX", proc)
    # Everything else inherited from the globals.
    assert station.access == ["0.0.0.0/0"]
    assert (station.encoding, station.segments, station.segsize,
            station.gap_treshold, station.gap_check_pattern,
            station.proc_gap_flush, station.stream_check) == (
        "steim2", 50, 10000, treshold, pattern, 100000, True)
    assert station.lineno == (48 if case == "mseed_passthrough" else 52)


@pytest.mark.parametrize("name, plugin, cmd, start_retry, proc", [
    ("example-seedlink-minimal.ini", "rawtest",
     "python3 @RUNDIR@/rawplugin.py", 5, "stream100"),
    ("example-seedlink-mseedfifo.ini", "mseedfifo",
     "@BINDIR@/mseedfifo_plugin -v -n -d @RUNDIR@/mseedfifo", 1, None),
])
def test_example_ini(reference, name, plugin, cmd, start_retry, proc):
    cfg = load_ini(reference / name, strict=True)   # no warnings at all
    g = cfg.globals
    assert g.organization == "Test Org"
    assert g.lockfile.startswith("@RUNDIR@/seedlink")
    assert (g.segments, g.segsize, g.port, g.plugin_start_retry) == (
        5, 100, 18000, 60)
    assert g.gap_check_pattern == ""            # not set: compiled default
    assert [(p.name, p.cmd, p.timeout, p.start_retry, p.shutdown_wait)
            for p in cfg.plugins] == [(plugin, cmd, 0, start_retry,
                                       5 if start_retry == 5 else 10)]
    test = cfg.station("XX.TEST")
    assert (test.name, test.network, test.description, test.proc) == (
        "TEST", "XX", "Test station", proc)
    assert cfg.station(".dummy").description == "Test Org"


def _seiscomp_cfg_values(reference):
    """Module defaults from seedlink.cfg, booleans as the generator writes."""
    values = {}
    for line in (reference / "seiscomp-seedlink.cfg").read_text().splitlines():
        m = re.match(r"(\w+) = (.*)", line)
        if m:
            value = m.group(2).strip('"')
            values[m.group(1)] = {"true": "enabled",
                                  "false": "disabled"}.get(value, value)
    return values


def _fill(template, values):
    def sub(m):
        return values[m.group(1) or m.group(2)]
    return re.sub(r"\$\{([^}]+)\}|\$([A-Za-z_][\w.]*)", sub, template)


def test_ini_assembled_from_seiscomp_templates(reference):
    """seedlink.ini built the way SeisComP's generator builds it."""
    values = _seiscomp_cfg_values(reference)
    values.update({
        "date": "today", "template": "t.tpl", "name": "seedlink",
        "organization": "GFZ", "lockfile": "/sc/var/run/seedlink.pid",
        "filebase": "/sc/var/lib/seedlink/buffer",
        "seedlink.filters": "/sc/var/lib/seedlink/filters.fir",
        "seedlink.streams": "/sc/var/lib/seedlink/streams.xml",
        "seedlink.chain.id": "0", "seedlink.plugin_dir": "/sc/plugins",
        "seedlink._daemon_opt": "", "seedlink.config_dir": "/sc/cfg",
        "plugins.mseedfifo.noexit_param": "-n",
        "plugins.mseedfifo.fifo_param": "/sc/fifo",
    })
    parts = [_fill((reference / name).read_text(), values) for name in (
        "seiscomp-seedlink_head.ini.tpl", "seiscomp-seedlink_sproc.ini.tpl",
        "seiscomp-chain-seedlink_plugin.ini.tpl",
        "seiscomp-mseedfifo-seedlink_plugin.ini.tpl",
        "seiscomp-seedlink_station_head.ini.tpl")]
    for net, sta, proc in (("GE", "APE", "stream100"), ("GE", "MORC", None)):
        parts.append('station %s.%s  description = "%s station"\n'
                     '             name = "%s"\n'
                     '             network = "%s"\n' % (net, sta, sta, sta,
                                                        net))
        if proc:
            parts.append('             proc = "%s"\n' % proc)
        parts.append("\n")
    cfg = parse_ini("".join(parts), "generated.ini", strict=True)

    g = cfg.globals
    assert (g.organization, g.network, g.port) == ("GFZ", "XX", 18000)
    assert (g.buffers, g.segments, g.segsize, g.blanks) == (100, 50, 1000, 10)
    assert (g.info, g.info_trusted, g.encoding) == ("streams", "all", "steim2")
    assert g.stream_check and g.window_extraction and not g.websocket
    assert (g.plugin_timeout, g.plugin_start_retry,
            g.plugin_shutdown_wait) == (0, 60, 10)
    assert g.filters == ["/sc/var/lib/seedlink/filters.fir"]
    assert [(p.name, p.timeout, p.start_retry, p.shutdown_wait)
            for p in cfg.plugins] == [("chain0", 600, 60, 15),
                                      ("mseedfifo", 0, 1, 10)]
    assert cfg.plugins[0].cmd == ("/sc/plugins/chain_plugin -v -f "
                                  "/sc/cfg/chain0.xml")
    assert [(s.key, s.name, s.network, s.proc) for s in cfg.stations] == [
        (".dummy", ".dummy", "XX", None), ("GE.APE", "APE", "GE", "stream100"),
        ("GE.MORC", "MORC", "GE", None)]
    assert cfg.stations[0].access == ["0.0.0.0"]
    assert cfg.stations[1].access == ["0.0.0.0/0"]


# --------------------------------------------------------------------------
# Defaults and inheritance
# --------------------------------------------------------------------------

def test_compiled_defaults():
    g = ini("").globals
    assert g == GlobalConfig()
    assert (g.organization, g.network, g.lockfile) == ("", "", "")
    assert (g.filebase, g.port, g.encoding) == ("/home/sysop/seedlink",
                                                18000, "steim1")
    assert (g.trusted, g.access) == ([], [])
    assert (g.info, g.info_trusted) == ("capabilities", "capabilities")
    assert not (g.window_extraction or g.window_extraction_trusted
                or g.websocket or g.websocket_trusted or g.stream_check)
    assert (g.gap_check_pattern, g.gap_treshold) == ("", 10000)
    assert (g.buffers, g.segments, g.segsize, g.blanks) == (100, 2, 100, 10)
    assert (g.seq_gap_limit, g.connections, g.connections_per_ip,
            g.bytespersec) == (0, 0, 0, 0)
    assert g.request_log
    assert (g.proc_gap_warn, g.proc_gap_flush, g.proc_gap_reset) == (2, 0, 0)
    assert (g.backfill_buffer, g.plugin_timeout, g.plugin_start_retry,
            g.plugin_shutdown_wait) == (0, 0, 0, 0)
    assert (g.filters, g.streams) == ([], [])


def test_station_inherits_globals_and_name_defaults_to_key():
    cfg = ini("""network = NN
encoding = steim2
buffers = 500
segments = 7
segsize = 33
blanks = 3
stream_check = enabled
gap_check_pattern = "BH."
gap_treshold = 200
proc_gap_warn = 11
proc_gap_flush = 222
proc_gap_reset = 333
backfill_buffer = 1.5
request_log = disabled
access = "10.0.0.0/8, 192.168.1.1"
station AAA
station BBB name = B network = MM segments = 9 access = 1.2.3.4
""")
    a, b = cfg.stations
    assert (a.key, a.name, a.network, a.description, a.proc) == (
        "AAA", "AAA", "NN", "", None)
    assert (a.encoding, a.buffers, a.segments, a.segsize, a.blanks) == (
        "steim2", 500, 7, 33, 3)
    assert (a.stream_check, a.gap_check_pattern, a.gap_treshold) == (
        True, "BH.", 200)
    assert (a.proc_gap_warn, a.proc_gap_flush, a.proc_gap_reset) == (
        11, 222, 333)
    assert (a.backfill_buffer, a.request_log) == (1.5, False)
    assert a.access == ["10.0.0.0/8", "192.168.1.1"]
    assert (b.key, b.name, b.network, b.segments, b.access) == (
        "BBB", "B", "MM", 9, ["1.2.3.4"])
    assert b.buffers == 500


def test_parameters_after_a_definition_belong_to_it(caplog):
    cfg = ini("""network = AA
station S1
port = 1234
network = BB
station S2
""")
    assert cfg.globals.port == 18000 and cfg.globals.network == "AA"
    assert cfg.station("S1").network == "BB"
    assert cfg.station("S2").network == "AA"
    assert cfg.warnings == ["test.ini:4: parameter 'port' is not used"]


def test_plugins_take_defaults_from_plugin_globals():
    cfg = ini("""plugin_timeout = 7
plugin_start_retry = 8
plugin_shutdown_wait = 9
plugin a cmd = "run a"
plugin b cmd = "run b" timeout = 1 start_retry = 2 shutdown_wait = 3
         proc = stream100
""")
    assert [(p.name, p.cmd, p.timeout, p.start_retry, p.shutdown_wait,
             p.proc) for p in cfg.plugins] == [
        ("a", "run a", 7, 8, 9, None), ("b", "run b", 1, 2, 3, "stream100")]


# --------------------------------------------------------------------------
# Values: clamping, conversion, booleans
# --------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("port", "0", 1), ("port", "65536", 65535),
    ("buffers", "9", 10), ("buffers", "100001", 100000),
    ("segments", "1", 2), ("segments", "1001", 1000),
    ("segsize", "5", 10), ("segsize", "200000", 100000),
    ("blanks", "-1", 0), ("blanks", "101", 100),
    ("seq_gap_limit", "16777217", 16777216), ("seq_gap_limit", "-5", 0),
    ("gap_treshold", "99", 100), ("gap_treshold", "0", 100),
    ("connections", "-1", 0), ("connections_per_ip", "-3", 0),
    ("bytespersec", "-1", 0), ("proc_gap_warn", "-1", 0),
    ("proc_gap_flush", "1", 100), ("proc_gap_flush", "99", 100),
    ("proc_gap_reset", "50", 100), ("proc_gap_reset", "-1", 100),
    ("plugin_timeout", "-1", 0), ("plugin_start_retry", "-1", 0),
    ("plugin_shutdown_wait", "-1", 0),
    ("backfill_buffer", "86401", 86400.0),
])
def test_out_of_range_values_are_clamped_with_warning(key, value, expected):
    cfg = ini("%s = %s\n" % (key, value))
    assert getattr(cfg.globals, key) == expected
    assert cfg.warnings == ["test.ini:2: [%s] %s is out of bounds, using %s "
                            "instead" % (key, value, expected if key !=
                                         "backfill_buffer" else "86400")]


@pytest.mark.parametrize("key, value, expected", [
    ("proc_gap_flush", "0", 0), ("proc_gap_reset", "0", 0),  # 0 = disabled
    ("proc_gap_flush", "100", 100), ("port", "+1", 1),
    ("port", '" 2"', 2), ("backfill_buffer", "0.5", 0.5),
    ("backfill_buffer", "1e3", 1000.0), ("backfill_buffer", "-1", -1.0),
    ("seq_gap_limit", "16777216", 16777216), ("port", "65535", 65535),
    # strtol() result stored in a 32-bit int keeps the low 32 bits.
    ("port", "4294985535", 18239),
])
def test_values_in_range_are_kept_silently(key, value, expected):
    cfg = ini("%s = %s\n" % (key, value))
    assert getattr(cfg.globals, key) == expected
    assert cfg.warnings == []


@pytest.mark.parametrize("value", ["abc", "12x", "0x10", "1.5", '"1 "'])
def test_non_integer_is_reported_and_default_kept(value):
    cfg = ini("segments = %s\nsegments = 4\n" % value)
    # The failed assignment does not count: the second one is taken.
    assert cfg.globals.segments == 4
    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith("test.ini:2: [segments] ")
    assert cfg.warnings[0].endswith(" is not an integer")


@pytest.mark.parametrize("word, value", [
    ("enabled", True), ("ENABLED", True), ("true", True), ("yes", True),
    ("disabled", False), ("Disabled", False), ("false", False), ("no", False),
])
def test_booleans(word, value):
    cfg = ini("stream_check = %s\nrequest_log = %s\n" % (word, word))
    assert cfg.globals.stream_check is value
    assert cfg.globals.request_log is value
    assert cfg.warnings == []


def test_invalid_boolean_and_info_level_warn():
    cfg = ini("websocket = on\ninfo = everything\ninfo_trusted = GAPS\n")
    assert cfg.globals.websocket is False
    assert cfg.globals.info == "capabilities"
    assert cfg.globals.info_trusted == "gaps"
    assert cfg.globals.info_trusted_level == INFO_LEVELS.index("gaps")
    assert cfg.warnings == [
        "test.ini:2: [websocket] 'on' is neither 'enabled' nor 'disabled'",
        "test.ini:3: [info] 'everything' is not a valid info level name"]


def test_second_assignment_warns_and_first_wins():
    cfg = ini("network = AA\nnetwork = BB\nstation S name = X name = Y\n")
    assert cfg.globals.network == "AA"
    assert cfg.station("S").name == "X"
    assert cfg.warnings == [
        "test.ini:3: parameter 'network' is assigned more than once",
        "test.ini:4: parameter 'name' is assigned more than once"]


def test_lists_split_at_commas_and_spaces():
    cfg = ini('trusted = "127.0.0.1,10.0.0.0/8  192.168.0.0/255.255.0.0"\n'
              'filters = a.fir,b.fir\nstreams = "s1.xml s2.xml"\n')
    assert cfg.globals.trusted == ["127.0.0.1", "10.0.0.0/8",
                                   "192.168.0.0/255.255.0.0"]
    assert cfg.globals.filters == ["a.fir", "b.fir"]
    assert cfg.globals.streams == ["s1.xml", "s2.xml"]


# --------------------------------------------------------------------------
# Lexical details
# --------------------------------------------------------------------------

def test_quoted_values():
    cfg = ini(r'''organization = "Seismic  Network = of Somewhere"
lockfile = "/tmp/with \"quotes\" inside"
filebase = ""
station S description = "Station \"S\"" name = plain
''')
    g = cfg.globals
    assert g.organization == "Seismic  Network = of Somewhere"
    # The backslash only keeps the quote from ending the value; it stays.
    assert g.lockfile == r'/tmp/with \"quotes\" inside'
    assert g.filebase == "/home/sysop/seedlink"    # "" assigns nothing
    st = cfg.station("S")
    assert st.description == r'Station \"S\"'
    assert st.name == "plain"


def test_quoted_value_runs_to_the_last_quote_of_the_line():
    cfg = ini('station S description = "a" name = "b"\n')
    assert cfg.station("S").description == 'a" name = "b'
    assert cfg.station("S").name == "S"


def test_unquoted_values_stop_at_blank_or_equals():
    cfg = ini("organization = two words\nnetwork = a=b\n")
    assert cfg.globals.organization == "two"
    assert cfg.globals.network == "a"
    # The leftover words cannot be parsed; the rest of the line is skipped.
    assert cfg.warnings == ["test.ini:2: parse error",
                            "test.ini:3: parse error"]


def test_comments_in_first_column():
    cfg = parse_ini("""* header comment [notasection]
# another [seedlink]
; third
[seedlink]
* organization = "commented out"
#port = 1
;port = 2
port = 3
station A
* a comment inside a station block
# name = nope
  name = yes
""", "c.ini", strict=True)
    assert cfg.globals.organization == ""
    assert cfg.globals.port == 3
    assert cfg.station("A").name == "yes"


def test_indented_comment_ends_the_block_like_seiscomp():
    cfg = ini("station A\n   # note\n   name = lost\nstation B\n")
    assert [s.key for s in cfg.stations] == ["A", "B"]
    assert cfg.station("A").name == "A"
    assert cfg.warnings == ["test.ini:3: definition of '#' is not used"]


def test_case_insensitive_section_keywords_and_parameters():
    cfg = parse_ini("[SeedLink]\nPORT = 19000\nSTATION X Name = Y\n"
                    "Plugin p CMD = c\n", "ci.ini", strict=True)
    assert cfg.globals.port == 19000
    assert cfg.station("X").name == "Y"
    assert cfg.plugin("p").cmd == "c"


def test_only_the_wanted_section_is_read():
    text = ("[other]\nport = 1\nstation O\n[seedlink]\nport = 2\n"
            "station S\n[third]\nport = 3\nstation T\n")
    cfg = parse_ini(text, "s.ini", strict=True)
    assert cfg.globals.port == 2 and [s.key for s in cfg.stations] == ["S"]
    other = parse_ini(text, "s.ini", section="OTHER", strict=True)
    assert other.globals.port == 1 and [s.key for s in other.stations] == ["O"]


def test_text_before_the_first_section_is_ignored():
    cfg = parse_ini("port = 1\nstation Z\n[seedlink]\nport = 2\n", "x.ini",
                    strict=True)
    assert cfg.globals.port == 2 and cfg.stations == []


def test_crlf_line_ends():
    cfg = parse_ini("[seedlink]\r\nport = 18500\r\nstation A name = B\r\n",
                    "crlf.ini", strict=True)
    assert cfg.globals.port == 18500 and cfg.station("A").name == "B"


def test_warnings_carry_line_numbers(caplog):
    with caplog.at_level(logging.WARNING, logger="seedlink_fast.inifile"):
        cfg = ini("\n\nbogus = 1\nport =\nstation A\n  colour = red\n")
    assert cfg.warnings == ["test.ini:4: parameter 'bogus' is not used",
                            "test.ini:5: parse error",
                            "test.ini:7: parameter 'colour' is not used"]
    assert [r.getMessage() for r in caplog.records] == cfg.warnings


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

def test_missing_section_is_an_error():
    with pytest.raises(ConfigError) as exc:
        parse_ini("[other]\nport = 1\n", "m.ini")
    assert exc.value.filename == "m.ini" and exc.value.lineno is None
    assert "section 'seedlink'" in exc.value.reason


def test_duplicate_section_is_an_error():
    with pytest.raises(ConfigError) as exc:
        parse_ini("[seedlink]\nport = 1\n\n[other]\n[SEEDLINK]\n", "d.ini")
    assert (exc.value.filename, exc.value.lineno) == ("d.ini", 5)
    assert "duplicate section" in exc.value.reason


def test_invalid_global_encoding_is_an_error():
    with pytest.raises(ConfigError) as exc:
        ini("port = 1\nencoding = steim3\nstation A\n")
    assert exc.value.lineno == 3
    assert "unsupported encoding 'steim3'" in exc.value.reason
    # Without any definition the check still happens.
    with pytest.raises(ConfigError):
        ini("encoding = mseed3\n")
    assert ini("encoding = STEIM2\n").globals.encoding == "steim2"


@pytest.mark.parametrize("key", ["trusted", "access"])
def test_invalid_global_acl_is_an_error(key):
    with pytest.raises(ConfigError) as exc:
        ini("\n%s = 127.0.0.1,example.org\nstation A\n" % key)
    assert exc.value.lineno == 3
    assert "example.org" in exc.value.reason


def test_strict_mode_turns_warnings_into_errors():
    with pytest.raises(ConfigError) as exc:
        ini("port = 1\n\nstation A color = blue\n", strict=True)
    assert (exc.value.lineno, exc.value.reason) == (
        4, "parameter 'color' is not used")
    with pytest.raises(ConfigError) as exc:
        ini("port = \"unterminated\n", strict=True)
    assert exc.value.lineno == 2 and exc.value.reason == "parse error"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_ini(tmp_path / "none.ini")
    assert exc.value.filename.endswith("none.ini")


# --------------------------------------------------------------------------
# Stations and plugins refused like SeisComP refuses them
# --------------------------------------------------------------------------

def test_station_problems_skip_the_station():
    cfg = ini("""network = XX
station A
station A description = again
station B name = A
station C encoding = steim3
station D access = 300.1.1.1
station E encoding = Steim1
""")
    assert [s.key for s in cfg.stations] == ["A", "E"]
    assert cfg.station("A").description == ""
    assert cfg.station("E").encoding == "steim1"
    assert cfg.warnings == [
        "test.ini:4: station A is already defined",
        "test.ini:5: failed to register B (XX_A is already in use)",
        "test.ini:6: station C: unsupported encoding 'steim3'",
        "test.ini:7: station D: invalid IP address/mask: 300.1.1.1"]


def test_plugin_problems():
    cfg = ini("""plugin a cmd = first
plugin b
plugin a cmd = second timeout = 4
plugin c timeout = 1
""")
    # Like SeisComP, a plugin without cmd reuses the previous block's cmd.
    assert [(p.name, p.cmd) for p in cfg.plugins] == [
        ("a", "first"), ("b", "first"), ("c", "first")]
    assert cfg.plugin("a").timeout == 0
    assert cfg.warnings == ["test.ini:4: plugin a is already defined"]
    empty = ini("plugin a\n")
    assert empty.plugins == []
    assert empty.warnings == [
        "test.ini:2: Command was not specified for plugin a"]


def test_unknown_definition_keyword_warns():
    cfg = ini("stream X\nname = Y\nstation S\n")
    assert [s.key for s in cfg.stations] == ["S"]
    assert cfg.warnings == ["test.ini:2: definition of 'stream' is not used"]


def test_check_procs_drops_undefined_references(caplog):
    cfg = ini("station A proc = p1\nstation B proc = nope\nstation C\n"
              "plugin x cmd = c proc = nope\nplugin y cmd = d\n")
    with caplog.at_level(logging.WARNING):
        checked = check_procs(cfg, {"p1"})
    assert [s.key for s in checked.stations] == ["A", "C"]
    assert [p.name for p in checked.plugins] == ["y"]
    assert "stream processor 'nope' is not defined" in caplog.text
    assert len(cfg.stations) == 3           # the input is not modified
    with pytest.raises(ConfigError) as exc:
        check_procs(cfg, {"p1"}, strict=True)
    assert exc.value.lineno == 3


@pytest.mark.parametrize("entry, ip, mask", [
    ("127.0.0.0/8", 0x7F000000, 0xFF000000),
    ("0.0.0.0/0", 0, 0),
    ("0.0.0.0", 0, 0xFFFFFFFF),
    ("192.168.1.7", 0xC0A80107, 0xFFFFFFFF),
    ("10.1.0.0/255.255.0.0", 0x0A010000, 0xFFFF0000),
    ("10.0.0.1/32", 0x0A000001, 0xFFFFFFFF),
])
def test_parse_ip_acl(entry, ip, mask):
    assert parse_ip_acl(entry) == (ip, mask)


@pytest.mark.parametrize("entry", ["256.0.0.1", "1.2.3", "1.2.3.4/33",
                                   "1.2.3.4/", "host.example", "1.2.3.4x",
                                   "1.2.3.4/255.255.256.0", "-1.2.3.4"])
def test_parse_ip_acl_rejects(entry):
    with pytest.raises(ValueError):
        parse_ip_acl(entry)


def test_result_types_are_dataclasses():
    cfg = ini("station A\nplugin p cmd = c\n")
    for obj in (cfg, cfg.globals, cfg.stations[0], cfg.plugins[0]):
        assert dataclasses.is_dataclass(obj)
    assert cfg.section == "seedlink" and cfg.filename == "test.ini"

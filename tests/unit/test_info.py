"""INFO documents and packets, CAT and HELLO, against the real daemon's bytes.

Every capture in shared/reference/captures is rebuilt from the values in its
own XML (the daemon's state at capture time) and must come out identical,
packets included (the record start time is taken from the capture's
header).  The golden INFO STREAMS/GAPS documents are rebuilt the same way
from shuffled stream lists, which pins formatting, sorting and the level
rules.  Attribute escaping is checked against libxml2 2.9 itself when the
system library is that version (ctypes, same calls as SeisComP).
"""
import ctypes
import ctypes.util
import datetime
import random
import struct
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings, strategies as st

from conftest import SHARED, golden_case
from seedlink_fast import info
from seedlink_fast._ext import mseed as _mseed
from seedlink_fast.info import (CapabilityConfig, ClientInfo, InfoConnection,
                                InfoContext, InfoStation, InfoStream,
                                ServerInfo)
from seedlink_fast.selectors import SelectorSet

CAPTURES = SHARED / "reference" / "captures"
LEVELS = ["id", "capabilities", "stations", "streams", "gaps", "connections", "all", "bogus"]


def _captures():
    if not CAPTURES.is_dir():
        pytest.skip("shared/reference/captures not available")
    return CAPTURES


# --------------------------------------------------------------------------
# helpers: capture XML -> input objects

def parse_time(text):
    d = datetime.datetime.strptime(text[:19], "%Y/%m/%d %H:%M:%S")
    d = d.replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp()) * 1_000_000 + int(text[20:24]) * 100


def streams_from(station_el):
    out = []
    for e in station_el.findall("stream"):
        out.append(InfoStream(
            e.get("location"), e.get("seedname"), e.get("type"),
            parse_time(e.get("begin_time")), parse_time(e.get("end_time")),
            int(e.get("begin_recno")), int(e.get("end_recno")),
            e.get("gap_check") == "enabled", int(e.get("gap_treshold")),
            [(parse_time(g.get("begin_time")), parse_time(g.get("end_time")))
             for g in e.findall("gap")]))
    return out


def context_from(xml, *, shuffle_seed=0, filler_streams=False):
    """An InfoContext holding what the daemon held when it wrote xml.

    The capture config (example-seedlink-minimal.ini) also has the first
    station ``.dummy`` with ``access = 0.0.0.0``: invisible to 127.0.0.1."""
    root = ET.fromstring(xml)
    server = ServerInfo(root.get("software"), root.get("organization"),
                        parse_time(root.get("started")))
    stations = [InfoStation("", "", root.get("organization"),
                            access=lambda ip: ip == "0.0.0.0")]
    rnd = random.Random(shuffle_seed)
    for s in root.findall("station"):
        streams = streams_from(s)
        if filler_streams and not streams:
            # levels that do not show streams must not show these
            streams = [InfoStream("", "BHZ", "D", 0, 0, 0, 1)]
        rnd.shuffle(streams)
        stations.append(InfoStation(
            s.get("name"), s.get("network"), s.get("description"),
            int(s.get("begin_seq"), 16), int(s.get("end_seq"), 16),
            s.get("stream_check") == "enabled", streams))
    caps = CapabilityConfig(info="streams", info_trusted="all",
                            window_extraction=True, window_extraction_trusted=True)
    return InfoContext(server, stations, caps)


def header_time_us(record):
    year, doy = struct.unpack(">HH", record[20:24])
    fract = struct.unpack(">H", record[28:30])[0]
    return _mseed.join_time_us(year, doy, record[24], record[25], record[26], fract * 100)


def trusted_client(ctx):
    return ctx.capabilities.client(True, "127.0.0.1")


# --------------------------------------------------------------------------
# captures, byte for byte

@pytest.mark.parametrize("level", LEVELS)
def test_capture_xml(level):
    xml = (_captures() / ("info_%s.xml" % level)).read_bytes()
    ctx = context_from(xml, shuffle_seed=LEVELS.index(level), filler_streams=True)
    assert info.info_xml(level, ctx, trusted_client(ctx)) == xml
    assert info.info_xml(level.upper(), ctx, trusted_client(ctx)) == xml


@pytest.mark.parametrize("level", LEVELS)
def test_capture_packets(level):
    cap = _captures()
    xml = (cap / ("info_%s.xml" % level)).read_bytes()
    raw = (cap / ("info_%s_response.bin" % level)).read_bytes()
    ctx = context_from(xml, filler_streams=True)
    now = header_time_us(raw[8:520])
    packets = info.info_response(level.upper(), ctx, trusted_client(ctx), now_us=now)
    assert all(len(p) == 520 for p in packets)
    assert b"".join(packets) == raw
    # and the lower-level builder, with the time in the middle of the 0.1 ms
    # (the header rounds to the nearest 0.1 ms)
    again = info.info_packets(xml, error=(level == "bogus"), now_us=now - 50)
    assert b"".join(again) == raw


def test_capture_bogus_is_err_channel():
    raw = (_captures() / "info_bogus_response.bin").read_bytes()
    assert raw[8 + 15:8 + 18] == b"ERR"
    assert raw[:8] == b"SLINFO  "


def test_capture_cat():
    cap = _captures()
    ctx = context_from((cap / "info_stations.xml").read_bytes())
    client = ClientInfo(ip="127.0.0.1")
    assert info.cat_response(ctx.stations, client) == (cap / "cat_response.bin").read_bytes()


def test_capture_hello():
    assert info.hello_response(info.SOFTWARE, "Test Org") == \
        (_captures() / "hello_response.bin").read_bytes()


# --------------------------------------------------------------------------
# golden INFO STREAMS / GAPS

@pytest.mark.parametrize("case", ["stream100_steim2", "highrate_4000", "mseed_passthrough"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_golden_streams_and_gaps(case, seed):
    d = golden_case(case)
    streams_xml = (d / "expected_info_streams.xml").read_bytes()
    gaps_xml = (d / "expected_info_gaps.xml").read_bytes()
    # the gaps document has everything (the streams one lacks the gaps)
    ctx = context_from(gaps_xml, shuffle_seed=seed)
    client = trusted_client(ctx)
    assert info.info_xml("gaps", ctx, client) == gaps_xml
    assert info.info_xml("streams", ctx, client) == streams_xml
    # gaps are written in the order given (they are not sorted)
    body = info.info_xml("all", ctx, client)
    assert body.count(b"<gap ") == gaps_xml.count(b"<gap ")


def test_golden_gap_order_is_kept():
    d = golden_case("mseed_passthrough")
    xml = (d / "expected_info_gaps.xml").read_bytes()
    ctx = context_from(xml)
    hhz = [s for s in ctx.stations[1].streams if s.seedname == "HHZ" and s.type == "D"][0]
    # the daemon's own order has a gap whose end precedes its begin
    assert any(b > e for b, e in hhz.gaps)


# --------------------------------------------------------------------------
# levels, permission, content rules

def _ctx(**kw):
    streams = [
        InfoStream("00", "BHZ", "D", 0, 10_000_000, 0, 5, True, 100,
                   [(1_000_000, 2_000_000)]),
        InfoStream("", "LOG", "L", 0, 0, 0, 1),
    ]
    conn = InfoConnection("127.0.0.1", 47726, 1_700_000_000_123_456, 0x98, 0x98, 0, 0,
                          True, True, False, None, ["??BHZ.D", "!??LOG.?"])
    stations = [
        InfoStation("APE", "GE", "Apes & <Monkeys>", 0, 0x10, True, streams, [conn]),
        InfoStation("HID", "GE", "hidden", access=False),
        InfoStation("NOC", "GE", "no check", 1, 2, False, streams),
    ]
    caps = kw.pop("caps", CapabilityConfig(info="streams", info_trusted="all",
                                           window_extraction=True))
    return InfoContext(ServerInfo(info.SOFTWARE, "Org", 1_700_000_000_000_000), stations, caps)


def _parse(xml):
    assert xml.startswith(b'<?xml version="1.0"?>\n') and xml.endswith(b">\n")
    assert xml.count(b"\n") == 2
    return ET.fromstring(xml)


@pytest.mark.parametrize("level,caps,stations,streams,gaps,conns", [
    ("id", 0, 0, 0, 0, 0),
    ("capabilities", 1, 0, 0, 0, 0),
    ("stations", 0, 1, 0, 0, 0),
    ("streams", 0, 1, 1, 0, 0),
    ("gaps", 0, 1, 1, 1, 0),
    ("connections", 0, 1, 0, 0, 1),
    ("all", 1, 1, 1, 1, 1),
])
def test_level_contents(level, caps, stations, streams, gaps, conns):
    ctx = _ctx()
    root = _parse(info.info_xml(level, ctx, ctx.capabilities.client(True)))
    assert bool(root.findall("capability")) == bool(caps)
    assert bool(root.findall("station")) == bool(stations)
    assert bool(root.findall("station/stream")) == bool(streams)
    assert bool(root.findall("station/stream/gap")) == bool(gaps)
    assert bool(root.findall("station/connection")) == bool(conns)
    if stations:
        # hidden station never shown; stream_check disabled -> no streams
        assert [s.get("name") for s in root.findall("station")] == ["APE", "NOC"]
        assert not root.findall("station[@name='NOC']/stream")


def test_level_names_and_permission():
    assert [info.info_level(n) for n in info.INFO_LEVELS] == list(range(7))
    assert info.info_level("StReAmS") == info.STREAMS
    assert info.info_level("bogus") == info.UNKNOWN_LEVEL
    assert info.info_level("") == info.UNKNOWN_LEVEL
    assert info.info_level(3) == 3
    assert info.info_level(9) == info.UNKNOWN_LEVEL
    ctx = _ctx()
    untrusted = ctx.capabilities.client(False)
    assert untrusted.info_level == info.STREAMS
    assert not info.info_refused("streams", untrusted)
    assert info.info_refused("gaps", untrusted)
    assert info.info_refused("BOGUS", ctx.capabilities.client(True))
    refused = info.info_xml("gaps", ctx, untrusted)
    assert refused == info.info_xml("id", ctx, untrusted)
    packets = info.info_response("gaps", ctx, untrusted, now_us=0)
    assert len(packets) == 1 and packets[0][8 + 15:8 + 18] == b"ERR"
    ok = info.info_response("stations", ctx, untrusted, now_us=0)
    assert ok[0][8 + 15:8 + 18] == b"INF"


def test_capabilities_observed_untrusted_case():
    # observed: untrusted with info=stations saw exactly these
    cfg = CapabilityConfig(info="stations", info_trusted="all",
                           window_extraction=False, window_extraction_trusted=True,
                           websocket=False, websocket_trusted=True)
    assert info.capability_names(cfg, False) == [
        "dialup", "multistation", "info:id", "info:capabilities", "info:stations"]
    assert info.capability_names(cfg, True) == [
        "dialup", "multistation", "window-extraction", "websocket", "info:id",
        "info:capabilities", "info:stations", "info:streams", "info:gaps",
        "info:connections", "info:all"]
    ctx = InfoContext(ServerInfo(), [], cfg)
    root = _parse(info.info_xml("capabilities", ctx, cfg.client(False)))
    assert [c.get("name") for c in root] == info.capability_names(cfg, False)


def test_capabilities_order_and_permission_rules():
    cfg = CapabilityConfig(info="all", info_trusted="id", window_extraction=True, websocket=True)
    assert info.capability_names(cfg, False) == [
        "dialup", "multistation", "window-extraction", "websocket"] + \
        ["info:" + n for n in info.INFO_LEVELS]
    # trusted level is max(info_trusted, info)
    assert cfg.client(True).info_level == info.ALL
    cl = CapabilityConfig(window_extraction_trusted=True, websocket_trusted=True).client(False)
    assert (cl.window_extraction, cl.websocket, cl.info_level) == (False, False, info.ID)
    ct = CapabilityConfig(window_extraction_trusted=True, websocket_trusted=True).client(True)
    assert (ct.window_extraction, ct.websocket) == (True, True)


def test_connection_element_matches_observed_example():
    ctx = _ctx()
    root_xml = info.info_xml("connections", ctx, ctx.capabilities.client(True))
    expected = (b'<connection host="127.0.0.1" port="47726" ctime="2023/11/14 22:13:20.1234" '
                b'begin_seq="000098" current_seq="000098" sequence_gaps="0" txcount="0" '
                b'begin_seq_valid="yes" realtime="yes" end_of_data="no">'
                b'<selector pattern="??BHZ.D"/><selector pattern="!??LOG.?"/></connection>')
    assert expected in root_xml
    # station element: attribute order, escaping, connection inside
    assert (b'<station name="APE" network="GE" description="Apes &amp; &lt;Monkeys&gt;" '
            b'begin_seq="000000" end_seq="000010" stream_check="enabled">' + expected +
            b'</station>') in root_xml


def test_connection_variants():
    sels = SelectorSet(["BHZ.D", "!LOG"])
    c1 = InfoConnection("10.0.0.1", 1, 0, None, -1, 3, 2**31, False, False, True,
                        (86_400_000_000, None), sels)
    c2 = InfoConnection("10.0.0.2", 65535, 0, 0xFFFFFF, 0, window=(None, 5), selectors=())
    c3 = InfoConnection("10.0.0.3", 2, 0, 1, 2, window=(0, 1_000_000_150))
    st_ = InfoStation("X", "XX", "d", connections=[c1, c2, c3])
    ctx = InfoContext(ServerInfo(), [st_], CapabilityConfig(info="all"))
    xml = info.info_xml("all", ctx, ctx.capabilities.client(False))
    assert (b'<connection host="10.0.0.1" port="1" ctime="1970/01/01 00:00:00.0000" '
            b'begin_seq="unset" current_seq="unset" sequence_gaps="3" txcount="-2147483648" '
            b'begin_seq_valid="no" realtime="no" end_of_data="yes">'
            b'<window begin_time="1970/01/02 00:00:00.0000" end_time="unset"/>'
            b'<selector pattern="??BHZ.D"/><selector pattern="!??LOG.?"/></connection>') in xml
    assert (b'<connection host="10.0.0.2" port="65535" ctime="1970/01/01 00:00:00.0000" '
            b'begin_seq="FFFFFF" current_seq="000000" sequence_gaps="0" txcount="0" '
            b'begin_seq_valid="no" realtime="yes" end_of_data="no"/>') in xml
    assert (b'<window begin_time="1970/01/01 00:00:00.0000" '
            b'end_time="1970/01/01 00:16:40.0001"/></connection>') in xml


def test_stream_sorting_is_strcasecmp_then_type():
    mk = lambda loc, chn, t: InfoStream(loc, chn, t, 0, 0, 0, 0)  # noqa: E731
    streams = [mk("", "abc", "D"), mk("", "ABD", "D"), mk("", "_ZZ", "D"),
               mk("00", "BHZ", "D"), mk("", "HHZ", "O"), mk("", "HHZ", "L"),
               mk("", "HHZ", "T"), mk("", "HHZ", "C"), mk("", "HHZ", "E"),
               mk("", "HHZ", "D"), mk("10", "A", "D"), mk("1", "Z", "D")]
    random.Random(5).shuffle(streams)
    ctx = InfoContext(ServerInfo(), [InfoStation("S", "N", "", stream_check=True, streams=streams)],
                      CapabilityConfig(info="all"))
    root = _parse(info.info_xml("streams", ctx, ctx.capabilities.client(False)))
    got = [(s.get("location"), s.get("seedname"), s.get("type")) for s in root.iter("stream")]
    assert got == [("", "_ZZ", "D"), ("", "abc", "D"), ("", "ABD", "D"),
                   ("", "HHZ", "D"), ("", "HHZ", "E"), ("", "HHZ", "C"),
                   ("", "HHZ", "T"), ("", "HHZ", "L"), ("", "HHZ", "O"),
                   ("00", "BHZ", "D"), ("1", "Z", "D"), ("10", "A", "D")]


def test_stream_attributes():
    s = InfoStream("00", "BHZ", "D", 1_709_208_000_123_599, 1_709_208_180_104_500, 7,
                   1_000_000 - 1, True, 100, [(0, 1)])
    ctx = InfoContext(ServerInfo("sw", "org", 0), [InfoStation("S", "N", "", 0, 0, True, [s])],
                      CapabilityConfig(info="all"))
    xml = info.info_xml("gaps", ctx, ctx.capabilities.client(False))
    assert xml == (b'<?xml version="1.0"?>\n<seedlink software="sw" organization="org" '
                   b'started="1970/01/01 00:00:00.0000"><station name="S" network="N" '
                   b'description="" begin_seq="000000" end_seq="000000" stream_check="enabled">'
                   b'<stream location="00" seedname="BHZ" type="D" '
                   b'begin_time="2024/02/29 12:00:00.1235" end_time="2024/02/29 12:03:00.1045" '
                   b'begin_recno="000007" end_recno="999999" gap_check="enabled" '
                   b'gap_treshold="100"><gap begin_time="1970/01/01 00:00:00.0000" '
                   b'end_time="1970/01/01 00:00:00.0000"/></stream></station></seedlink>\n')


@pytest.mark.parametrize("us,text", [
    (0, "1970/01/01 00:00:00.0000"),
    (1_709_208_000_123_599, "2024/02/29 12:00:00.1235"),
    (1_709_208_000_123_499, "2024/02/29 12:00:00.1234"),    # truncated, not rounded
    (1_704_067_199_999_999, "2023/12/31 23:59:59.9999"),
    (-1, "1969/12/31 23:59:59.9999"),
    (4_102_444_800_000_000, "2100/01/01 00:00:00.0000"),
])
def test_format_time(us, text):
    assert info.format_time(us) == text


# --------------------------------------------------------------------------
# escaping (libxml2 2.9 attribute rules)

@pytest.mark.parametrize("value,expected", [
    ("plain", b"plain"),
    ("a&b", b"a&amp;b"),
    ("<x>", b"&lt;x&gt;"),
    ('say "hi"', b"say &quot;hi&quot;"),
    ("it's", b"it's"),
    ("l1\nl2\rl3\tl4", b"l1&#10;l2&#13;l3&#9;l4"),
    ("\x01\x7f", b"\x01\x7f"),                     # other controls copied raw
    ("Zürich", b"Z&#xFC;rich"),
    ("€ 𝄞", b"&#x20AC; &#x1D11E;"),
    ("&amp;", b"&amp;amp;"),                       # no entity parsing on input
    ("cut\x00here", b"cut"),                       # C string
    (b"\xff\x80abc\xe9", b"&#xFF;&#x80;abc\xe9"),  # invalid UTF-8; last byte raw
    ("a\udce9b", b"a&#xE9;b"),                     # surrogate-escaped raw byte
    ("a\udce9", b"a\xe9"),
    (b"\xc3A", b"&#xC1;"),                         # continuation bytes not checked
    (b"\xed\xa0\x80x", b"&#xED;&#xA0;&#x80;x"),    # surrogate code point: not a Char
])
def test_escape_table(value, expected):
    assert info.escape_attr(value) == expected


def _libxml2():
    path = ctypes.util.find_library("xml2") or "libxml2.so.2"
    try:
        lib = ctypes.CDLL(path)
        version = ctypes.c_char_p.in_dll(lib, "xmlParserVersion").value
    except (OSError, ValueError):
        return None
    if not version or not version.startswith(b"209"):
        return None                 # only 2.9.x is the reference behaviour
    vp = ctypes.c_void_p
    cp = ctypes.c_char_p
    for name, res, args in [
            ("xmlNewDoc", vp, [cp]), ("xmlNewDocNode", vp, [vp, vp, cp, cp]),
            ("xmlDocSetRootElement", vp, [vp, vp]), ("xmlNewChild", vp, [vp, vp, cp, cp]),
            ("xmlNewProp", vp, [vp, cp, cp]), ("xmlSaveFileTo", ctypes.c_int, [vp, vp, cp]),
            ("xmlFreeDoc", None, [vp]), ("xmlSetGenericErrorFunc", None, [vp, vp])]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    lib.xmlOutputBufferCreateIO.restype = vp
    return lib


_WRITE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char), ctypes.c_int)
_CLOSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_ERRF = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_silent = _ERRF(lambda ctx, msg: None)


def libxml2_document(lib, tree):
    """Serialise (name, [(attr, value bytes)], [children]) exactly as
    SeisComP does: xmlNewProp values, xmlSaveFileTo with no encoding."""
    lib.xmlSetGenericErrorFunc(None, ctypes.cast(_silent, ctypes.c_void_p))
    doc = lib.xmlNewDoc(b"1.0")
    name, attrs, children = tree
    root = lib.xmlNewDocNode(doc, None, name, None)
    lib.xmlDocSetRootElement(doc, root)

    def fill(node, attrs, children):
        for a, v in attrs:
            lib.xmlNewProp(node, a, v)
        for cname, cattrs, cchildren in children:
            fill(lib.xmlNewChild(node, None, cname, None), cattrs, cchildren)

    fill(root, attrs, children)
    out = []

    def write(ctx, buf, n):
        out.append(ctypes.string_at(buf, n))
        return n

    w, c = _WRITE(write), _CLOSE(lambda ctx: 0)
    lib.xmlOutputBufferCreateIO.argtypes = [_WRITE, _CLOSE, ctypes.c_void_p, ctypes.c_void_p]
    lib.xmlSaveFileTo(lib.xmlOutputBufferCreateIO(w, c, None, None), doc, None)
    lib.xmlFreeDoc(doc)
    lib.xmlSetGenericErrorFunc(None, None)
    return b"".join(out)


@pytest.fixture(scope="module")
def libxml2():
    lib = _libxml2()
    if lib is None:
        pytest.skip("libxml2 2.9 not loadable")
    return lib


def _tree_of(element):
    """ElementTree element -> the (name, attrs, children) form (bytes values)."""
    def conv(e):
        return (e.tag.encode(), [(k.encode(), v.encode("utf-8", "surrogateescape"))
                                 for k, v in e.attrib.items()],
                [conv(c) for c in e])
    return conv(element)


def test_oracle_reproduces_capture(libxml2):
    xml = (_captures() / "info_all.xml").read_bytes()
    assert libxml2_document(libxml2, _tree_of(ET.fromstring(xml))) == xml


_value_bytes = st.one_of(
    st.binary(max_size=12).map(lambda b: b.replace(b"\0", b"")),
    st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass").replace(b"\0", b"")),
    st.text(st.sampled_from('ab&<>"\n\r\t\'é€'), max_size=8).map(str.encode))


@settings(max_examples=600, deadline=None)
@given(st.lists(_value_bytes, min_size=1, max_size=4))
def test_escape_against_libxml2(libxml2, values):
    attrs = [(b"a%d" % i, v) for i, v in enumerate(values)]
    expected = libxml2_document(libxml2, (b"seedlink", attrs, [(b"station", attrs[:1], [])]))
    got = (b'<?xml version="1.0"?>\n<seedlink' +
           b"".join(b" " + k + b'="' + info.escape_attr(v) + b'"' for k, v in attrs) +
           b'><station a0="' + info.escape_attr(values[0]) + b'"/></seedlink>\n')
    assert got == expected


_names = st.text(st.sampled_from("ABXZ09_a &é<\""), max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_names, _names, _names, st.booleans(),
                          st.lists(st.tuples(st.sampled_from(["", "00", "a0", "_1"]),
                                             st.sampled_from(["BHZ", "bhz", "LOG", "_Z"]),
                                             st.sampled_from("DECTLO")),
                                   max_size=4, unique=True)),
                max_size=3),
       st.sampled_from(info.INFO_LEVELS + ("bogus",)), _names)
def test_whole_documents_against_libxml2(libxml2, stations, level, org):
    infos = []
    for name, net, desc, check, keys in stations:
        streams = [InfoStream(loc, chn, t, 1_000_000 * i, 2_000_000 * i, i, i + 1, i % 2 == 0,
                              100, [(i, i + 1)] * (i % 3))
                   for i, (loc, chn, t) in enumerate(keys)]
        conns = [InfoConnection("1.2.3.4", 1000 + len(name), 5, 1, None, selectors=["??BHZ.D"],
                                window=(1, None) if check else None)]
        infos.append(InfoStation(name, net, desc, 1, 2, check, streams, conns))
    ctx = InfoContext(ServerInfo(info.SOFTWARE, org, 123), infos,
                      CapabilityConfig(info="all", window_extraction=True))
    got = info.info_xml(level, ctx, ctx.capabilities.client(False))
    # the same tree, built through libxml2 from our own parse of the output
    # would be circular; build it from the inputs instead
    n = info.info_level(level)
    b = lambda s: s.encode("utf-8", "surrogateescape")  # noqa: E731
    root_attrs = [(b"software", b(info.SOFTWARE)), (b"organization", b(org)),
                  (b"started", b(info.format_time(123)))]
    children = []
    if n in (info.CAPABILITIES, info.ALL):
        children += [(b"capability", [(b"name", b(c))], [])
                     for c in info.capability_names(ctx.capabilities, False)]
    if info.STATIONS <= n <= info.ALL:
        for s in infos:
            kids = []
            if (info.STREAMS <= n <= info.GAPS or n == info.ALL) and s.stream_check:
                def key(x):
                    return (b(x.location).lower(), b(x.seedname).lower(), "DECTLO".index(x.type))
                for x in sorted(s.streams, key=key):
                    gaps = [(b"gap", [(b"begin_time", b(info.format_time(g0))),
                                      (b"end_time", b(info.format_time(g1)))], [])
                            for g0, g1 in x.gaps] if n >= info.GAPS else []
                    kids.append((b"stream", [
                        (b"location", b(x.location)), (b"seedname", b(x.seedname)),
                        (b"type", b(x.type)),
                        (b"begin_time", b(info.format_time(x.begin_time_us))),
                        (b"end_time", b(info.format_time(x.end_time_us))),
                        (b"begin_recno", b"%06d" % x.begin_recno),
                        (b"end_recno", b"%06d" % x.end_recno),
                        (b"gap_check", b"enabled" if x.gap_check else b"disabled"),
                        (b"gap_treshold", b"100")], gaps))
            if n >= info.CONNECTIONS:
                for c in s.connections:
                    ck = []
                    if c.window:
                        ck.append((b"window", [(b"begin_time", b(info.format_time(1))),
                                               (b"end_time", b"unset")], []))
                    ck.append((b"selector", [(b"pattern", b"??BHZ.D")], []))
                    ck_attrs = [(b"host", b"1.2.3.4"), (b"port", b"%d" % c.port),
                                (b"ctime", b(info.format_time(5))), (b"begin_seq", b"000001"),
                                (b"current_seq", b"unset"), (b"sequence_gaps", b"0"),
                                (b"txcount", b"0"), (b"begin_seq_valid", b"no"),
                                (b"realtime", b"yes"), (b"end_of_data", b"no")]
                    kids.append((b"connection", ck_attrs, ck))
            children.append((b"station", [
                (b"name", b(s.name)), (b"network", b(s.network)),
                (b"description", b(s.description)), (b"begin_seq", b"000001"),
                (b"end_seq", b"000002"),
                (b"stream_check", b"enabled" if s.stream_check else b"disabled")], kids))
    assert got == libxml2_document(libxml2, (b"seedlink", root_attrs, children))


# --------------------------------------------------------------------------
# packets

def _records(packets):
    return [p[8:] for p in packets]


def test_packet_layout():
    xml = bytes(range(1, 256)) * 4            # 1020 bytes -> 448 + 448 + 124
    now = 1_700_000_000_123_456
    packets = info.info_packets(xml, now_us=now)
    assert [p[:8] for p in packets] == [b"SLINFO *", b"SLINFO *", b"SLINFO  "]
    recs = _records(packets)
    assert b"".join(r[64:64 + struct.unpack(">H", r[30:32])[0]] for r in recs) == xml
    for i, r in enumerate(recs):
        assert len(r) == 512
        assert r[:8] == b"%06dD " % i
        assert r[8:20] == b"       INF  "                      # sta, loc, chan, net
        assert header_time_us(r) == 1_700_000_000_123_500       # rounded to 0.1 ms
        assert r[32:36] == b"\0\0\0\0"                          # rate 0/0
        assert r[36:40] == b"\0\0\0\x01"                        # flags, 1 blockette
        assert r[40:44] == b"\0\0\0\0"
        assert r[44:48] == b"\x00\x40\x00\x30"                  # data 64, blockette 48
        assert r[48:56] == b"\x03\xe8\x00\x00\x00\x01\x09\x00"  # B1000 ASCII, BE, 512
        assert r[56:64] == bytes(8)
    assert struct.unpack(">H", recs[2][30:32])[0] == 124
    assert recs[2][64 + 124:] == bytes(512 - 64 - 124)


def test_packet_edge_sizes():
    assert info.info_packets(b"", now_us=0) == []
    one = info.info_packets(b"x" * 448, now_us=0)
    assert [p[:8] for p in one] == [b"SLINFO  "]
    two = info.info_packets(b"x" * 449, now_us=0, error=True)
    assert [p[:8] for p in two] == [b"SLINFO *", b"SLINFO  "]
    assert all(p[8 + 15:8 + 18] == b"ERR" for p in two)
    assert struct.unpack(">H", two[1][8 + 30:8 + 32])[0] == 1


# --------------------------------------------------------------------------
# CAT and HELLO

def test_cat_format_and_access():
    stations = [
        InfoStation("", "", "dummy", access=lambda ip: ip == "0.0.0.0"),
        InfoStation("APE", "GE", "Apes"),
        InfoStation("LONGNAME", "X", "n"),
        InfoStation("A", "ABC", ""),
    ]
    client = ClientInfo(ip="10.1.1.1")
    assert info.cat_response(stations, client) == \
        b"GE APE   Apes\n X LONGNAME n\nABC A     \nEND"
    assert info.cat_response(stations[:1], client) == b""
    assert info.cat_response([], client) == b""
    assert info.cat_chunks([], client) == []


def test_cat_chunks_of_512():
    stations = [InfoStation("S%03d" % i, "XX", "d" * 40) for i in range(30)]
    chunks = info.cat_chunks(stations, ClientInfo())
    text = b"".join(chunks)
    assert text.count(b"\n") == 30 and len(text) == 30 * 50
    assert [len(c) for c in chunks] == [512, 512] + [len(text) - 1024]
    assert info.cat_response(stations, ClientInfo()) == text + b"END"
    exact = [InfoStation("S", "XX", "d" * (512 - 10))]      # one line of exactly 512
    assert [len(c) for c in info.cat_chunks(exact, ClientInfo())] == [512]


def test_hello_and_31_capabilities():
    assert info.capabilities_31() == "SLPROTO:3.1 CAP EXTREPLY NSWILDCARD BATCH"
    assert info.CAPABILITIES_31 == ("SLPROTO:3.1", "CAP", "EXTREPLY", "NSWILDCARD", "BATCH")
    assert info.hello_response(info.SOFTWARE, "GE APE", info.CAPABILITIES_31) == \
        b"SeedLink v3.3 (2024.020) :: SLPROTO:3.1 CAP EXTREPLY NSWILDCARD BATCH\r\nGE APE\r\n"
    assert info.hello_response(description="Z\udcfc") == \
        b"SeedLink v3.3 (2024.020)\r\nZ\xfc\r\n"

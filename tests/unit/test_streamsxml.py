"""Tests of the streams.xml reader (seedlink_fast.streamsxml)."""

import logging
from fractions import Fraction
from pathlib import Path

import pytest

from seedlink_fast.errors import ConfigError
from seedlink_fast.firfile import default_filters_path, load_filters
from seedlink_fast.streamsxml import (Input, Node, check_filters,
                                      load_streams, node_output_rate,
                                      parse_rate, parse_streams, resolve_proc)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE = SHARED / "reference"
GOLDEN = REFERENCE / "golden"


@pytest.fixture(scope="module")
def filters():
    return load_filters(default_filters_path())


@pytest.fixture
def reference():
    if not REFERENCE.is_dir():
        pytest.skip("shared reference data not available")
    return REFERENCE


def streams_of(resolved_input):
    """{channel: (location, rate)} of every output stream of one input."""
    return {n.channel: (n.location, n.rate)
            for n in resolved_input.streams()}


STREAM100 = {"BH": Fraction(20), "LH": Fraction(1), "VH": Fraction(1, 10)}


# --------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------

def test_golden_stream100(reference, filters):
    procs = load_streams(GOLDEN / "stream100_steim2" / "streams.xml", filters)
    assert list(procs) == ["stream100"]
    proc = procs["stream100"]
    assert [i.name for i in proc.trees[0].inputs] == ["Z", "N", "E"]
    assert proc.stream_count() == 9
    resolved = resolve_proc(proc, filters)
    for comp in "ZNE":
        assert streams_of(resolved[comp]) == {
            s + comp: ("", r) for s, r in STREAM100.items()}
    z = resolved["Z"]
    # FS2D5 -> F96C (no stream) -> ULP -> VLP
    chain = [z.nodes[0], z.nodes[0].children[0],
             z.nodes[0].children[0].children[0]]
    assert [n.filter.name for n in chain] == ["FS2D5", "F96C", "ULP"]
    assert [n.decimation for n in chain] == [5, 2, 10]
    assert chain[1].channel is None and chain[1].rate == 10


def test_golden_highrate(reference, filters):
    procs = load_streams(str(GOLDEN / "highrate_4000" / "streams.xml"),
                         filters)
    resolved = resolve_proc(procs["hr4000"], filters)
    assert list(resolved) == ["Z"]
    inp = resolved["Z"].input
    assert (inp.channel, inp.location, inp.rate) == ("Z", "00", 4000)
    assert streams_of(resolved["Z"]) == {
        "FHZ": ("00", Fraction(4000)), "CHZ": ("00", Fraction(800)),
        "DHZ": ("00", Fraction(400)), "EHZ": ("00", Fraction(400, 3)),
        "SHZ": ("00", Fraction(40)), "DLZ": ("00", Fraction(400)),
    }
    fh = resolved["Z"].nodes[0]
    assert fh.filter is None and fh.decimation == 1


def test_example_streams_with_using(reference, filters):
    procs = load_streams(reference / "example-streams.xml", filters)
    assert list(procs) == ["stream100", "naqs_bb40", "naqs_sm100",
                           "naqs_bb40_sm100"]
    merged = procs["naqs_bb40_sm100"]
    assert set(merged.inputs()) == {"BHZ", "BHN", "BHE", "ACZ", "ACN", "ACE"}
    assert merged.stream_count() == 3 * 4 + 3 * 1
    resolved = resolve_proc(merged, filters)
    assert streams_of(resolved["BHN"]) == {
        "SHN": ("", Fraction(40)), "BHN": ("", Fraction(20)),
        "LHN": ("", Fraction(1)), "VHN": ("", Fraction(1, 10))}
    assert streams_of(resolved["ACE"]) == {"SLE": ("", Fraction(100))}


TEMPLATES = {
    "seiscomp-streams_stream100.tpl": ["stream100"],
    "seiscomp-streams_q330_100.tpl": ["q330_100"],
    "seiscomp-streams_naqs_bb40_sm100.tpl": ["naqs_bb40", "naqs_sm100",
                                             "naqs_bb40_sm100"],
    "seiscomp-streams_reftek.tpl": ["reftek"],
    "seiscomp-streams_generic_3x50.tpl": ["generic_3x50"],
    "seiscomp-streams_edata_100.tpl": ["edata_100"],
}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_seiscomp_templates_wrapped_in_streams(reference, filters, template,
                                               caplog):
    body = (reference / template).read_text()
    with caplog.at_level(logging.WARNING):
        procs = parse_streams("<streams>\n" + body + "</streams>\n",
                              template, filters)
    assert list(procs) == TEMPLATES[template]
    assert not caplog.records           # templates are clean
    check_filters(procs, filters)
    for proc in procs.values():
        assert proc.stream_count() > 0
        for resolved in resolve_proc(proc, filters).values():
            for node in resolved.streams():
                assert len(node.channel) == 3


def test_all_templates_assembled_like_seiscomp(reference, filters):
    body = "".join((reference / t).read_text() for t in sorted(TEMPLATES))
    procs = parse_streams("<streams>" + body + "</streams>", "all.xml",
                          filters)
    assert len(procs) == 8
    reftek = resolve_proc(procs["reftek"], filters)
    assert set(reftek) == {"%d.%d" % (a, b) for a in range(4)
                           for b in range(6 if a < 2 else 3)}
    assert streams_of(reftek["3.1"]) == {"LHN": ("", Fraction(1)),
                                         "VHN": ("", Fraction(1, 10))}
    edata = resolve_proc(procs["edata_100"], filters)
    assert streams_of(edata["PLL"]) == {"AEP": ("", Fraction(1))}
    assert streams_of(edata["Z"])["HHZ"] == ("", Fraction(100))
    generic = resolve_proc(procs["generic_3x50"], filters)
    assert streams_of(generic["E"]) == {
        "SHE": ("", Fraction(50)), "BHE": ("", Fraction(25)),
        "LHE": ("", Fraction(1)), "VHE": ("", Fraction(1, 10))}


# --------------------------------------------------------------------------
# Synthetic documents
# --------------------------------------------------------------------------

def doc(body):
    return "<streams>\n%s\n</streams>\n" % body


def test_pruning_of_nodes_without_streams():
    procs = parse_streams(doc("""
  <proc name="p">
    <tree>
      <input name="A" channel="Z" location="" rate="100"/>
      <node filter="F96C"/>
      <node filter="F96C">
        <node filter="ULP"><node filter="VLP"/></node>
        <node filter="FS2D5"><node stream="XX"/></node>
      </node>
      <node stream="HH"><node filter="VLP"/></node>
    </tree>
    <tree>
      <input name="B" channel="Z" location="" rate="100"/>
      <node filter="F96C"><node filter="VLP"/></node>
    </tree>
  </proc>"""))
    proc = procs["p"]
    assert list(proc.inputs()) == ["A"]          # tree of B had no stream
    nodes = proc.trees[0].nodes
    assert [(n.filter, n.stream) for n in nodes] == [("F96C", None),
                                                    (None, "HH")]
    assert [(c.filter, c.stream) for c in nodes[0].children] == [
        ("FS2D5", None)]
    assert nodes[0].children[0].children[0].stream == "XX"
    assert nodes[1].children == []
    assert proc.stream_count() == 2


def test_proc_without_any_stream_has_no_inputs():
    procs = parse_streams(doc("""<proc name="empty"><tree>
        <input name="A" rate="1"/><node filter="VLP"/></tree></proc>"""))
    assert procs["empty"].trees == [] and procs["empty"].inputs() == {}


@pytest.mark.parametrize("text, expected", [
    ("100", (100, 1)), ("1/10", (1, 10)), ("400/3", (400, 3)),
    ("200/2", (200, 2)), ("65535", (65535, 1)), ("1/65535", (1, 65535)),
    (" 40", (40, 1)), ("+5", (5, 1)),
    ("0x64", (100, 1)), ("010", (8, 1)),     # C strtoul with base 0
])
def test_parse_rate_accepts(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["0", "65536", "1/0", "1/65536", "1.5",
                                  "0.1", "abc", "", "100/", "/10", "-1",
                                  "100 ", "10/2/1", "08"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_fractional_rates_propagate_reduced(filters):
    procs = parse_streams(doc("""<proc name="p"><tree>
        <input name="A" channel="1" location="10" rate="200/2"/>
        <input name="B" channel="2" location="10" rate="1/3"/>
        <node stream="PP"><node filter="NA3" stream="QQ"/></node>
        </tree></proc>"""), filters=filters)
    a = procs["p"].inputs()["A"][0]
    assert (a.rate_num, a.rate_den) == (200, 2)     # kept as written
    resolved = resolve_proc(procs["p"], filters)
    assert streams_of(resolved["A"]) == {"PP1": ("10", Fraction(100)),
                                         "QQ1": ("10", Fraction(100, 3))}
    qq = resolved["B"].streams()[1]
    assert (qq.rate.numerator, qq.rate.denominator) == (1, 9)
    assert node_output_rate(Fraction(400), 3) == Fraction(400, 3)


@pytest.mark.parametrize("rate", ["0", "1.5", "70000", "10/0", "fast"])
def test_invalid_input_rate_is_an_error_with_line(rate):
    text = doc('<proc name="p"><tree>\n\n<input name="A" rate="%s"/>'
               '<node stream="HH"/></tree></proc>' % rate)
    with pytest.raises(ConfigError) as exc:
        parse_streams(text, "rate.xml")
    assert exc.value.filename == "rate.xml" and exc.value.lineno == 4
    assert "sample rate" in exc.value.reason


def test_input_without_name_or_rate_is_an_error():
    with pytest.raises(ConfigError, match="name is not specified"):
        parse_streams(doc('<proc name="p"><tree><input rate="1"/></tree>'
                          '</proc>'))
    with pytest.raises(ConfigError, match="rate is not specified"):
        parse_streams(doc('<proc name="p"><tree><input name="A"/></tree>'
                          '</proc>'))


def test_unknown_elements_and_attributes_warn(caplog):
    text = doc("""<proc name="p" color="red">
    <tree>
      <input name="A" channel="Z" rate="1" gain="2"/>
      <foo><node stream="XX"/></foo>
      <node stream="HH"/>
    </tree>
    <input name="B" rate="1"/>
    stray text
  </proc>""")
    with caplog.at_level(logging.WARNING, logger="seedlink_fast.streamsxml"):
        procs = parse_streams(text, "u.xml")
    messages = [r.getMessage() for r in caplog.records]
    assert "u.xml:2: attribute 'color' of <proc> is not used" in messages
    assert "u.xml:4: attribute 'gain' of <input> is not used" in messages
    assert "u.xml:5: element 'foo' is not used" in messages
    assert "u.xml:8: element 'input' is not used" in messages
    assert any(m.startswith("u.xml:") and "unused character data" in m
               for m in messages)
    # The content of an unknown element is skipped without further noise.
    assert len(messages) == 5
    assert list(procs["p"].inputs()) == ["A"]
    assert [n.stream for n in procs["p"].trees[0].nodes] == ["HH"]


def test_names_are_case_insensitive():
    procs = parse_streams("""<Streams><PROC NAME="p"><Tree>
        <Input Name="A" Channel="Z" Location="00" RATE="10"/>
        <NODE Stream="HH"/></Tree></PROC></Streams>""")
    inp, tree = procs["p"].inputs()["A"]
    assert (inp.channel, inp.location, inp.rate) == ("Z", "00", 10)
    assert tree.nodes[0].stream == "HH"


@pytest.mark.parametrize("text, line", [
    ("<streams>\n<proc name='p'>\n</streams>\n", 3),
    ("<streams>\n<proc name='p'>\n<tree><input name='A' rate='1'>\n", 4),
    ("<streams>\n\n<proc name=p/>\n</streams>", 3),
    ("", 1),
])
def test_malformed_xml_is_an_error_with_line(text, line):
    with pytest.raises(ConfigError) as exc:
        parse_streams(text, "bad.xml")
    assert exc.value.filename == "bad.xml"
    assert exc.value.lineno == line
    assert "malformed XML" in exc.value.reason
    assert str(exc.value).startswith("bad.xml:%d: " % line)


def test_wrong_root_element_is_an_error():
    with pytest.raises(ConfigError, match="root element 'streams'"):
        parse_streams("<stream><proc name='p'/></stream>", "root.xml")


def test_undefined_filter_is_an_error(filters):
    text = doc('<proc name="p"><tree><input name="A" rate="100"/>\n'
               '<node filter="NOPE" stream="HH"/></tree></proc>')
    with pytest.raises(ConfigError) as exc:
        parse_streams(text, "f.xml", filters)
    assert exc.value.lineno == 3 and "'NOPE'" in exc.value.reason
    # Parsed without filters, the check happens at resolution time.
    procs = parse_streams(text, "f.xml")
    with pytest.raises(ConfigError) as exc:
        check_filters(procs, filters)
    assert (exc.value.filename, exc.value.lineno) == ("f.xml", 3)


def test_using_an_undefined_proc_is_an_error():
    with pytest.raises(ConfigError, match="'later' is not defined") as exc:
        parse_streams(doc('<proc name="p">\n<using proc="later"/></proc>\n'
                          '<proc name="later"/>'))
    assert exc.value.lineno == 3


def test_duplicate_proc_warns_and_keeps_first(caplog):
    text = doc("""<proc name="p"><tree><input name="A" rate="1"/>
        <node stream="AA"/></tree></proc>
        <proc name="p"><tree><input name="B" rate="1"/>
        <node stream="BB"/></tree></proc>""")
    with caplog.at_level(logging.WARNING):
        procs = parse_streams(text)
    assert list(procs["p"].inputs()) == ["A"]
    assert "proc 'p' is already defined" in caplog.text


def test_input_precedence_own_first_then_last_using(caplog):
    text = doc("""
  <proc name="one"><tree>
      <input name="X" channel="1" rate="1"/><input name="Y" channel="1" rate="1"/>
      <node stream="O1"/></tree></proc>
  <proc name="two"><tree>
      <input name="Y" channel="2" rate="1"/><input name="Z" channel="2" rate="1"/>
      <node stream="T2"/></tree></proc>
  <proc name="mix">
    <using proc="one"/>
    <using proc="two"/>
    <tree>
      <input name="Z" channel="M" rate="1"/>
      <input name="Z" channel="D" rate="1"/>
      <node stream="MM"/>
    </tree>
  </proc>""")
    with caplog.at_level(logging.WARNING):
        procs = parse_streams(text, "prec.xml")
    inputs = procs["mix"].inputs()
    assert {n: i.channel for n, (i, t) in inputs.items()} == {
        "Z": "M", "Y": "2", "X": "1"}
    assert inputs["X"][1].nodes[0].stream == "O1"
    assert inputs["Y"][1].nodes[0].stream == "T2"
    assert "input 'Z' is already defined in proc 'mix'" in caplog.text
    # The procs that were merged are unchanged.
    assert set(procs["two"].inputs()) == {"Y", "Z"}


def test_own_input_without_streams_frees_its_name():
    procs = parse_streams(doc("""
  <proc name="base"><tree><input name="A" channel="B" rate="1"/>
      <node stream="BB"/></tree></proc>
  <proc name="p"><using proc="base"/>
      <tree><input name="A" channel="P" rate="1"/><node filter="VLP"/></tree>
  </proc>"""))
    assert procs["p"].inputs()["A"][0].channel == "B"


def test_streams_files_share_procs(tmp_path, filters):
    first = tmp_path / "a.xml"
    second = tmp_path / "b.xml"
    first.write_text(doc('<proc name="base"><tree><input name="A" rate="20"/>'
                         '<node stream="BH"/></tree></proc>'))
    second.write_text(doc('<proc name="more"><using proc="base"/></proc>'))
    procs = load_streams("%s,%s" % (first, second), filters)
    assert list(procs) == ["base", "more"]
    assert list(procs["more"].inputs()) == ["A"]
    assert load_streams([first, second]).keys() == procs.keys()


def test_long_input_name_warns(caplog):
    with caplog.at_level(logging.WARNING):
        parse_streams(doc('<proc name="p"><tree>'
                          '<input name="ELEVENCHARS" rate="1"/>'
                          '<node stream="HH"/></tree></proc>'))
    assert "longer than 10 characters" in caplog.text


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_streams(tmp_path / "none.xml")
    assert exc.value.filename.endswith("none.xml")


def test_dataclass_defaults():
    node = Node()
    assert (node.filter, node.stream, node.children) == (None, None, [])
    assert not node.has_stream()
    assert Input("A").rate == 1

"""Pick parsing: SCML (several 0.x namespaces), QuakeML (BED and BED-RT),
JSON lines; bad picks are reported and skipped; pick.xml round trip."""
import json

import pytest

from seedlink_fast.picks import (
    Pick, PickError, PickFilter, format_time, parse_json_line, parse_time, parse_xml,
    pick_to_scml)
from seedlink_fast.picks.model import sanitize_name, seedlink_time
from seedlink_fast.picks.parse import parse_file, parse_json_lines

T = "2026-11-21T23:55:00.123456Z"

SCML = """<?xml version="1.0" encoding="UTF-8"?>
<seiscomp xmlns="%s" version="0.12">
  <EventParameters>
    <pick publicID="Pick/20261121235500.123456.1">
      <time><value>%s</value><uncertainty>0.05</uncertainty></time>
      <waveformID networkCode="XX" stationCode="TEST" channelCode="BHZ"/>
      <methodID>AIC</methodID>
      <phaseHint>P</phaseHint>
      <evaluationMode>automatic</evaluationMode>
    </pick>
    <pick publicID="Pick/2">
      <time><value>2026-11-21T23:56:00Z</value></time>
      <waveformID networkCode="XX" stationCode="TEST" locationCode="00" channelCode="HHN"/>
      <phaseHint>S</phaseHint>
      <evaluationMode>manual</evaluationMode>
    </pick>
    <pick publicID="Pick/bad-time">
      <time><value>yesterday</value></time>
      <waveformID networkCode="XX" stationCode="TEST" channelCode="BHZ"/>
    </pick>
    <pick publicID="Pick/no-wid"><time><value>%s</value></time></pick>
    <origin publicID="Origin/1"><time><value>%s</value></time></origin>
  </EventParameters>
</seiscomp>
"""

QUAKEML = """<?xml version="1.0" encoding="UTF-8"?>
<q:quakeml xmlns:q="http://quakeml.org/xmlns/quakeml/1.2" xmlns="%s">
  <eventParameters publicID="smi:org.example/ep">
    <event publicID="smi:org.example/event/1">
      <pick publicID="smi:org.example/pick/1">
        <time><value>%s</value></time>
        <waveformID networkCode="XX" stationCode="TEST" locationCode="" channelCode="BHN"/>
        <phaseHint>S</phaseHint>
      </pick>
    </event>
    <pick publicID="smi:org.example/pick/rt">
      <time><value>%s</value></time>
      <waveformID networkCode="XX" stationCode="TEST" channelCode="BHE"/>
    </pick>
  </eventParameters>
</q:quakeml>
"""


@pytest.mark.parametrize("ns", [
    "http://geofon.gfz-potsdam.de/ns/seiscomp3-schema/0.7",
    "http://geofon.gfz-potsdam.de/ns/seiscomp3-schema/0.12",
    "http://geofon.gfz.de/ns/seiscomp-schema/0.14",
])
def test_scml_any_version(ns):
    picks, errors = parse_xml(SCML % (ns, T, T, T))
    assert [p.public_id for p in picks] == ["Pick/20261121235500.123456.1", "Pick/2"]
    p = picks[0]
    assert (p.network, p.station, p.location, p.channel) == ("XX", "TEST", "", "BHZ")
    assert p.time_ns == parse_time(T) and p.iso_time == T
    assert (p.phase_hint, p.evaluation_mode, p.uncertainty) == ("P", "automatic", 0.05)
    assert picks[1].location == "00" and picks[1].evaluation_mode == "manual"
    assert len(errors) == 2
    assert "Pick/bad-time" in errors[0] and "no waveformID" in errors[1]


@pytest.mark.parametrize("bed", ["http://quakeml.org/xmlns/bed/1.2",
                                 "http://quakeml.org/xmlns/bed-rt/1.2"])
def test_quakeml_picks_in_events_and_top_level(bed):
    picks, errors = parse_xml(QUAKEML % (bed, T, T))
    assert errors == []
    assert [(p.public_id, p.channel) for p in picks] == [
        ("smi:org.example/pick/rt", "BHE"), ("smi:org.example/pick/1", "BHN")]


def test_malformed_xml_is_an_error_not_an_exception():
    picks, errors = parse_xml(b"<seiscomp><EventParameters><pick")
    assert picks == [] and "not well-formed" in errors[0]
    picks, errors = parse_xml(b"<html><body/></html>")
    assert picks == [] and "neither SCML nor QuakeML" in errors[0]


def test_json_forms():
    obj = {"publicID": "a", "time": T, "phaseHint": "P", "evaluationMode": "automatic",
           "uncertainty": 0.1,
           "waveformID": {"networkCode": "XX", "stationCode": "TEST", "channelCode": "BHZ"}}
    (p,), errors = parse_json_line(json.dumps(obj))
    assert errors == [] and p.stream_id == "XX.TEST..BHZ" and p.uncertainty == 0.1
    obj["waveformID"] = "XX.TEST.00.HHZ"
    obj["time"] = {"value": T, "uncertainty": 0.2}
    del obj["uncertainty"]
    (p,), _ = parse_json_line(json.dumps(obj))
    assert p.location == "00" and p.uncertainty == 0.2
    # a list on one line; a pick round-trips through as_dict
    picks, errors = parse_json_line(json.dumps([p.as_dict(), obj]))
    assert picks == [p, p] and errors == []


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('{"time": "%s", "waveformID": "XX.TEST..BHZ"}' % T, "without publicID"),
    ('{"publicID": "x", "waveformID": "XX.TEST..BHZ"}', "no time"),
    ('{"publicID": "x", "time": "2026-13-01T00:00:00Z", "waveformID": "XX.TEST..BHZ"}',
     "bad time"),
    ('{"publicID": "x", "time": "2026-11-21T00:00:00+02:00", "waveformID": "XX.TEST..BHZ"}',
     "bad time"),
    ('{"publicID": "x", "time": "%s", "waveformID": "XX.TEST.BHZ"}' % T, "NET.STA.LOC.CHA"),
    ('{"publicID": "x", "time": "%s"}' % T, "no waveformID"),
    ('{"publicID": "x", "time": "%s", "waveformID": "XX.TEST..Z"}' % T, "too short"),
    ('{"publicID": "x", "time": "%s", "waveformID": ".TEST..BHZ"}' % T, "networkCode"),
    ('{"publicID": "x", "time": "%s", "waveformID": "XX.TEST..BHZ", "uncertainty": "a"}' % T,
     "uncertainty"),
    ('[1, 2]', "JSON object"),
])
def test_json_bad_picks(line, message):
    picks, errors = parse_json_line(line)
    assert picks == [] and message in errors[0], errors


def test_jsonl_document_skips_bad_lines_and_comments(tmp_path):
    good = json.dumps({"publicID": "g", "time": T, "waveformID": "XX.TEST..BHZ"})
    text = "# a comment\n\n%s\nnonsense\n%s\n" % (good, good.replace('"g"', '"h"'))
    picks, errors = parse_json_lines(text)
    assert [p.public_id for p in picks] == ["g", "h"] and errors[0].startswith("line 4:")
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    assert [p.public_id for p in parse_file(path)[0]] == ["g", "h"]
    # one JSON object spread over lines
    path.write_text(json.dumps(json.loads(good), indent=2))
    assert [p.public_id for p in parse_file(path)[0]] == ["g"]


def test_times():
    assert parse_time("2026-11-21T23:55:00Z") == parse_time("2026-11-21 23:55:00")
    assert parse_time("2026-11-21T23:55:00.1234567891Z") % 10**9 == 123456789
    assert parse_time("2026-11-21") == parse_time("2026-11-21T00:00:00+00:00")
    assert format_time(parse_time(T)) == T
    assert seedlink_time(parse_time(T)) == "2026,11,21,23,55,00"
    assert seedlink_time(parse_time(T), round_up=True) == "2026,11,21,23,55,01"
    with pytest.raises(PickError):
        parse_time("2026-02-30T00:00:00Z")


def test_pick_to_scml_round_trip():
    p = Pick("smi:x/pick/1", parse_time(T), "XX", "TEST", "", "BHZ", "P", "automatic", 0.05)
    xml = pick_to_scml(p)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    (q,), errors = parse_xml(xml)
    assert q == p and errors == []


def test_pick_to_scml_is_valid_scml_0_12(tmp_path):
    """ObsPy ships the SCML 0.12 schema: pick.xml validates against it."""
    core = pytest.importorskip("obspy.io.seiscomp.core")
    p = Pick("Pick/1", parse_time(T), "XX", "TEST", "00", "BHZ", "P", "manual", 0.05)
    path = tmp_path / "pick.xml"
    path.write_bytes(pick_to_scml(p))
    assert core.validate(str(path), version="0.12", verbose=True)
    path.write_bytes(pick_to_scml(Pick("Pick/2", 0, "XX", "TEST", "", "BHZ")))
    assert core.validate(str(path), version="0.12", verbose=True)


def test_filter():
    def pick(**kw):
        base = dict(public_id="a", time_ns=0, network="XX", station="TEST", location="",
                    channel="BHZ")
        base.update(kw)
        return Pick(**base)

    f = PickFilter(phases=["P"], modes=["automatic"], stations=["XX.T*", "!XX.TEST.00"])
    assert f.reason(pick(phase_hint="p", evaluation_mode="Automatic")) is None
    assert "phase" in f.reason(pick(phase_hint="S", evaluation_mode="automatic"))
    assert "phase" in f.reason(pick(evaluation_mode="automatic"))
    assert "mode" in f.reason(pick(phase_hint="P", evaluation_mode="manual"))
    assert "not selected" in f.reason(pick(phase_hint="P", evaluation_mode="automatic",
                                           station="OTHER"))
    assert "excluded" in f.reason(pick(phase_hint="P", evaluation_mode="automatic",
                                       location="00"))
    assert PickFilter().reason(pick()) is None


def test_sanitize_name():
    assert sanitize_name("smi:org.example/pick/1") == "smi_org.example_pick_1"
    assert sanitize_name("../../etc") == "_.._etc"
    long = sanitize_name("x" * 500)
    assert len(long) == 160 and long != sanitize_name("x" * 499)


@pytest.mark.parametrize("name", ["model", "parse", "components", "window", "recordstream",
                                  "polling"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module("seedlink_fast.picks." + name))
    assert result.failed == 0 and result.attempted > 0

"""Reading picks: SeisComP XML (SCML 0.x), QuakeML 1.2 and JSON.

Every reader returns ``(picks, errors)``: the good picks, and one message
per pick (or line) that could not be used.  A bad pick never spoils the
others.

SCML and QuakeML are read by element *local* names, so any SCML 0.x
namespace (``seiscomp3-schema/0.7`` ... ``seiscomp-schema/0.14``), QuakeML
BED and BED-RT all work.  A pick is a ``pick`` element directly below
``EventParameters``/``eventParameters`` or below an ``event``.

>>> picks, errors = parse_json_line('{"publicID": "p1", "time": "2026-11-21T23:55:00Z",'
...                                 ' "waveformID": "XX.TEST..BHZ", "phaseHint": "P"}')
>>> picks[0].stream_id, picks[0].phase_hint, errors
('XX.TEST..BHZ', 'P', [])
"""
import json
import xml.etree.ElementTree as ET

from .model import Pick, PickError, parse_time

__all__ = ["parse_xml", "parse_json_line", "parse_json_lines", "parse_file", "pick_from_dict",
           "pick_to_scml", "SCML_NAMESPACE"]

SCML_NAMESPACE = "http://geofon.gfz-potsdam.de/ns/seiscomp3-schema/0.12"
_PICK_PARENTS = {"EventParameters", "eventParameters", "event"}
MAX_FILE_BYTES = 256 << 20       # a pick file larger than this is refused


def _local(tag):
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(elem, name):
    for sub in elem:
        if _local(sub.tag) == name:
            return sub
    return None


def _text(elem, *path):
    for name in path:
        if elem is None:
            return None
        elem = _child(elem, name)
    if elem is None or elem.text is None:
        return None
    return elem.text.strip() or None


def _float(text, what, pid):
    if text is None:
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        raise PickError("pick %s: bad %s %r" % (pid, what, text)) from None


def _time(value, pid):
    try:
        return parse_time(value)
    except PickError as exc:
        raise PickError("pick %s: %s" % (pid, exc)) from None


def _pick_from_element(elem):
    pid = (elem.get("publicID") or "").strip()
    if not pid:
        raise PickError("pick element without publicID")
    value = _text(elem, "time", "value")
    if value is None:
        raise PickError("pick %s: no time/value" % pid)
    wid = _child(elem, "waveformID")
    if wid is None:
        raise PickError("pick %s: no waveformID" % pid)
    return Pick(pid, _time(value, pid),
                (wid.get("networkCode") or "").strip(), (wid.get("stationCode") or "").strip(),
                (wid.get("locationCode") or "").strip(), (wid.get("channelCode") or "").strip(),
                phase_hint=_text(elem, "phaseHint"),
                evaluation_mode=_text(elem, "evaluationMode"),
                uncertainty=_float(_text(elem, "time", "uncertainty"), "uncertainty", pid))


def parse_xml(data):
    """Picks of an SCML or QuakeML document (bytes or str)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        return [], ["not well-formed XML: %s" % exc]
    picks, errors = [], []
    for parent in root.iter():
        if _local(parent.tag) not in _PICK_PARENTS:
            continue
        for elem in parent:
            if _local(elem.tag) == "pick":
                try:
                    picks.append(_pick_from_element(elem))
                except PickError as exc:
                    errors.append(str(exc))
    if not picks and not errors and _local(root.tag) not in ("seiscomp", "quakeml"):
        errors.append("no picks: root element <%s> is neither SCML nor QuakeML"
                      % _local(root.tag))
    return picks, errors


def _waveform_id(value, pid):
    """(net, sta, loc, cha) from an object and/or a NET.STA.LOC.CHA string."""
    if isinstance(value, str):
        parts = value.strip().split(".")
        if len(parts) != 4:
            raise PickError("pick %s: waveformID %r is not NET.STA.LOC.CHA" % (pid, value))
        return tuple(parts)
    if isinstance(value, dict):
        codes = tuple(value.get(key) or "" for key in
                      ("networkCode", "stationCode", "locationCode", "channelCode"))
        if not all(isinstance(c, str) for c in codes):
            raise PickError("pick %s: waveformID codes must be strings" % pid)
        if not any(codes) and isinstance(value.get("id"), str):
            return _waveform_id(value["id"], pid)
        return tuple(c.strip() for c in codes)
    raise PickError("pick %s: waveformID must be an object or NET.STA.LOC.CHA" % pid)


def _quantity(value):
    """A bare value or SCML-JSON's {"value": ..., "uncertainty": ...}."""
    if isinstance(value, dict):
        return value.get("value"), value.get("uncertainty")
    return value, None


def pick_from_dict(obj):
    """A Pick from the JSON form (see module docs).  Raises PickError."""
    if not isinstance(obj, dict):
        raise PickError("a pick must be a JSON object, not %s" % type(obj).__name__)
    pid = obj.get("publicID", obj.get("id"))
    if not isinstance(pid, str) or not pid.strip():
        raise PickError("pick without publicID")
    pid = pid.strip()
    time_value, uncertainty = _quantity(obj.get("time"))
    if time_value is None:
        raise PickError("pick %s: no time" % pid)
    time_ns = _time(time_value, pid)
    if "waveformID" not in obj:
        raise PickError("pick %s: no waveformID" % pid)
    net, sta, loc, cha = _waveform_id(obj["waveformID"], pid)
    if obj.get("uncertainty") is not None:
        uncertainty = obj["uncertainty"]
    phase = obj.get("phaseHint")
    if isinstance(phase, dict):     # QuakeML-JSON style {"code": "P"}
        phase = phase.get("code")
    mode = obj.get("evaluationMode")
    for what, value in (("phaseHint", phase), ("evaluationMode", mode)):
        if value is not None and not isinstance(value, str):
            raise PickError("pick %s: %s must be a string" % (pid, what))
    if uncertainty is not None and (isinstance(uncertainty, bool)
                                    or not isinstance(uncertainty, (int, float))):
        raise PickError("pick %s: uncertainty must be a number" % pid)
    return Pick(pid, time_ns, net, sta, loc, cha, phase_hint=phase or None,
                evaluation_mode=mode or None,
                uncertainty=None if uncertainty is None else float(uncertainty))


def parse_json_line(line):
    """Picks of one JSON line: an object, or a list of objects."""
    line = line.strip()
    if not line or line.startswith("#"):
        return [], []
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return [], ["not JSON (%s): %.80s" % (exc, line)]
    picks, errors = [], []
    for item in obj if isinstance(obj, list) else [obj]:
        try:
            picks.append(pick_from_dict(item))
        except PickError as exc:
            errors.append(str(exc))
    return picks, errors


def parse_json_lines(text):
    """Picks of a JSON-lines document; errors name the line number."""
    picks, errors = [], []
    for number, line in enumerate(text.splitlines(), 1):
        got, bad = parse_json_line(line)
        picks.extend(got)
        errors.extend("line %d: %s" % (number, e) for e in bad)
    return picks, errors


def parse_file(path):
    """Picks of a file: XML when it starts with ``<``, else JSON lines (a
    single JSON document spread over several lines is also accepted)."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return [], ["%s: larger than %d bytes, not read" % (path, MAX_FILE_BYTES)]
    if data.lstrip()[:1] == b"<":
        return parse_xml(data)
    text = data.decode("utf-8", "replace")
    picks, errors = parse_json_lines(text)
    if errors and not picks:
        try:
            obj = json.loads(text)
        except ValueError:
            return picks, errors
        return parse_json_line(json.dumps(obj))
    return picks, errors


def pick_to_scml(pick, version="0.12"):
    """A minimal SCML document (``seiscomp`` > ``EventParameters`` > ``pick``)
    holding one pick, as bytes; children in the schema's order."""
    ns = "http://geofon.gfz-potsdam.de/ns/seiscomp3-schema/%s" % version
    root = ET.Element("seiscomp", {"xmlns": ns, "version": version})
    ep = ET.SubElement(root, "EventParameters")
    elem = ET.SubElement(ep, "pick", {"publicID": pick.public_id})
    time = ET.SubElement(elem, "time")
    ET.SubElement(time, "value").text = pick.iso_time
    if pick.uncertainty is not None:
        ET.SubElement(time, "uncertainty").text = repr(float(pick.uncertainty))
    wid = {"networkCode": pick.network, "stationCode": pick.station}
    if pick.location:
        wid["locationCode"] = pick.location
    wid["channelCode"] = pick.channel
    ET.SubElement(elem, "waveformID", wid)
    if pick.phase_hint:
        ET.SubElement(elem, "phaseHint").text = pick.phase_hint
    if pick.evaluation_mode:
        ET.SubElement(elem, "evaluationMode").text = pick.evaluation_mode
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "utf-8") + b"\n"

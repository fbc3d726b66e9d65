"""The station buffer against the real daemon: feeding each golden case's
records in sequence order must give SeisComP's buffer.xml byte for byte and
the stream part of its INFO STREAMS / INFO GAPS answers."""
import random
import xml.etree.ElementTree as ET

import pytest

from conftest import SHARED, golden_case
from seedlink_fast.buffer import StationBuffer, format_time
from seedlink_fast.inifile import parse_ini
from seedlink_fast.streamproc import replay_file

CASES = {"stream100_steim2": "XX.GOLD", "highrate_4000": "XX.FAST",
         "mseed_passthrough": "XX.PASS"}


def golden_config(case_dir, filebase):
    text = (case_dir / "seedlink.ini").read_text()
    text = (text.replace("@FILTERS@", str(SHARED / "reference" / "seiscomp-filters.fir"))
                .replace("@STREAMS@", str(case_dir / "streams.xml"))
                .replace("@FILEBASE@", str(filebase))
                .replace("@PORT@", "18000").replace("@PLUGIN@", "true"))
    return parse_ini(text, str(case_dir / "seedlink.ini"))


@pytest.fixture(scope="module", params=sorted(CASES))
def golden(request, tmp_path_factory):
    """(case dir, station config, records in sequence order) of a case."""
    case = request.param
    case_dir = golden_case(case)
    tmp = tmp_path_factory.mktemp(case)
    config = golden_config(case_dir, tmp / "unused")
    key = CASES[case]
    replay_file(config, str(case_dir / "input.plugin"), str(tmp / "out"))
    data = (tmp / "out" / (key + ".mseed")).read_bytes()
    records = [data[i:i + 512] for i in range(0, len(data), 512)]
    (station,) = [s for s in config.stations if s.key == key]
    return case_dir, station, records


def feed(buf, records, rng=None):
    """append_many in random chunk sizes (or append one by one)."""
    if rng is None:
        for rec in records:
            buf.append(rec)
        return
    i = 0
    while i < len(records):
        n = rng.randint(1, 300)
        assert buf.append_many(records[i:i + n]) == i
        i += n


def expected_buffer_xml(case_dir, station):
    return (case_dir / ("buffer_%s.xml" % station.key)).read_bytes()


def test_buffer_xml_is_byte_identical(golden, tmp_path):
    case_dir, station, records = golden
    buf = StationBuffer(station, str(tmp_path))
    buf.open()
    feed(buf, records)
    buf.close()
    got = (tmp_path / station.key / "buffer.xml").read_bytes()
    assert got == expected_buffer_xml(case_dir, station)


def test_batched_appends_give_the_same_buffer(golden, tmp_path):
    case_dir, station, records = golden
    buf = StationBuffer(station, str(tmp_path))
    buf.open()
    feed(buf, records, random.Random(7))
    assert buf.next_position == len(records)
    buf.close()
    seg = tmp_path / station.key / "segments" / "0000000000000000"
    assert seg.read_bytes() == b"".join(records)
    got = (tmp_path / station.key / "buffer.xml").read_bytes()
    assert got == expected_buffer_xml(case_dir, station)


def test_restart_midway_gives_the_same_buffer_xml(golden, tmp_path):
    """Clean shutdown after half the records, restart (index from buffer.xml,
    with its 0.1 ms times), the rest: still SeisComP's file."""
    case_dir, station, records = golden
    half = len(records) // 2
    buf = StationBuffer(station, str(tmp_path))
    buf.open()
    feed(buf, records[:half])
    buf.close()
    buf = StationBuffer(station, str(tmp_path))
    buf.open()
    assert not (tmp_path / station.key / "buffer.xml").exists()
    assert buf.next_position == half
    feed(buf, records[half:])
    buf.close()
    got = (tmp_path / station.key / "buffer.xml").read_bytes()
    assert got == expected_buffer_xml(case_dir, station)


def test_crash_rebuild_gives_the_same_index(golden, tmp_path):
    """No buffer.xml: the index rebuilt from the record headers equals the
    one built while the records arrived."""
    case_dir, station, records = golden
    buf = StationBuffer(station, str(tmp_path))
    buf.open()
    feed(buf, records)
    buf.close()
    (tmp_path / station.key / "buffer.xml").unlink()
    buf = StationBuffer(station, str(tmp_path))
    buf.open()
    assert buf.next_position == len(records)
    assert buf.buffer_xml_text().encode() == expected_buffer_xml(case_dir, station)
    buf.close()


def _info_streams(path):
    root = ET.parse(path).getroot()
    (station,) = root.findall("station")
    return station, station.findall("stream")


@pytest.mark.parametrize("level", ["streams", "gaps"])
def test_stream_index_matches_info(golden, tmp_path, level):
    case_dir, station, records = golden
    buf = StationBuffer(station, str(tmp_path))
    buf.open()
    feed(buf, records, random.Random(11))
    st_el, expected = _info_streams(case_dir / ("expected_info_%s.xml" % level))
    assert st_el.get("name") == buf.name and st_el.get("network") == buf.network
    assert st_el.get("description") == buf.description
    assert st_el.get("begin_seq") == "%06X" % buf.begin_seq
    assert st_el.get("end_seq") == "%06X" % buf.end_seq
    assert st_el.get("stream_check") == "enabled"
    streams = buf.streams
    assert len(streams) == len(expected)
    for s, el in zip(streams, expected):
        got = {
            "location": s.location, "seedname": s.seedname, "type": s.type,
            "begin_time": format_time(s.begin_time_us), "end_time": format_time(s.end_time_us),
            "begin_recno": "%06d" % s.begin_recno, "end_recno": "%06d" % s.end_recno,
            "gap_check": "enabled" if s.gap_check else "disabled",
            "gap_treshold": str(s.gap_treshold),
        }
        assert got == dict(el.attrib)
        gaps = [(g.get("begin_time"), g.get("end_time")) for g in el.findall("gap")]
        if level == "gaps":
            assert [(format_time(b), format_time(e)) for b, e in s.gaps] == gaps
        else:
            assert gaps == []
    buf.close()

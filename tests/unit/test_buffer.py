"""The station buffer: segment files, memory ring, positions and sequence
numbers, restart and crash recovery, the stream index and time lookups."""
import calendar
import os
import struct
import time

import pytest

from seedlink_fast.buffer import SEQ_MOD, StationBuffer, format_time, parse_time
from seedlink_fast.inifile import StationConfig

T0 = calendar.timegm((2024, 5, 1, 0, 0, 0)) * 10**6          # 2024-05-01T00:00:00


def make_record(recno, channel="BHZ", location="", start_us=T0, nsamp=100, rate=10,
                log=False, network="XX", station="TEST", blank=False, little_endian=False):
    """A 512-byte record: fixed header + blockette 1000 (data not encoded; the
    buffer only reads headers).  rate: positive = Hz, negative = seconds."""
    if blank:
        return bytes(512)
    sec, usec = divmod(start_us, 10**6)
    tm = time.gmtime(sec)
    if log:
        rf, rm = 0, 0
    elif rate >= 1:
        rf, rm = int(rate), 1
    else:
        rf, rm = -int(round(1 / rate)), 1
    end = "<" if little_endian else ">"
    head = (b"%06d" % recno + b"D " + station.ljust(5).encode() + location.ljust(2).encode()
            + channel.ljust(3).encode() + network.ljust(2).encode()
            + struct.pack(end + "HHBBBxHHhhBBBBiHH", tm.tm_year, tm.tm_yday, tm.tm_hour,
                          tm.tm_min, tm.tm_sec, usec // 100, nsamp, rf, rm, 0, 0, 0, 1, 0,
                          64, 48)
            + struct.pack(end + "HHBBBx", 1000, 0, 0 if log else 11, 1, 9))
    return head.ljust(512, b"\0")


def config(**kw):
    base = dict(key="XX.TEST", name="TEST", network="XX", description="test station",
                buffers=10, segments=3, segsize=10, stream_check=True,
                gap_check_pattern="", gap_treshold=500000)
    base.update(kw)
    return StationConfig(**base)


def series(n, channel="BHZ", first=0, t0=T0, step_s=10, **kw):
    """n contiguous 10 Hz records of 100 samples (10 s each)."""
    return [make_record(first + i, channel, start_us=t0 + (first + i) * step_s * 10**6, **kw)
            for i in range(n)]


def opened(tmp_path, **kw):
    buf = StationBuffer(config(**kw), str(tmp_path))
    buf.open()
    return buf


def segdir(tmp_path):
    return tmp_path / "XX.TEST" / "segments"


def listing(tmp_path):
    return {p.name: p.stat().st_size for p in segdir(tmp_path).iterdir()}


def crash(buf):
    """Lose the process: descriptors go away, no buffer.xml."""
    if buf._wfd is not None:
        os.close(buf._wfd)
    for fd in buf._readers.values():
        os.close(fd)
    buf._wfd, buf._readers, buf._opened = None, {}, False


def snapshot(buf):
    return [(s.location, s.seedname, s.type, s.begin_time_us, s.end_time_us, s.begin_recno,
             s.end_recno, s.begin_seq, s.end_seq, s.gap_check, s.gap_treshold, s.gaps,
             [(g.end_time_us, g.end_recno, g.end_seq, g.gaps) for g in s.segments])
            for s in buf.streams]


# -- layout, positions, reading -------------------------------------------------------------

def test_fresh_buffer(tmp_path):
    buf = opened(tmp_path)
    assert segdir(tmp_path).is_dir()
    assert (buf.next_position, buf.oldest_position, buf.begin_seq, buf.end_seq) == (0, 0, 0, 0)
    assert buf.streams == [] and buf.read(0) is None and buf.read_range(0, 5) == []
    assert buf.position_of_seq(0) is None
    recs = series(3)
    assert [buf.append(r) for r in recs] == [0, 1, 2]
    assert listing(tmp_path) == {"0000000000000000": 3 * 512}
    assert [buf.read(i) for i in range(3)] == recs and buf.read(3) is None
    assert buf.read_range(1, 10) == recs[1:]
    assert buf.position_of_seq(2) == 2 and buf.position_of_seq(3) is None
    assert buf.end_seq == 3 and buf.seq_of(SEQ_MOD + 5) == 5
    (s,) = buf.streams
    assert (s.location, s.seedname, s.type, s.begin_seq, s.end_seq) == ("", "BHZ", "D", 0, 3)
    assert (s.begin_recno, s.end_recno) == (0, 3)
    assert s.begin_time_us == T0 and s.end_time_us == T0 + 30 * 10**6
    with pytest.raises(ValueError):
        buf.append(b"x" * 100)
    buf.close()
    assert (tmp_path / "XX.TEST" / "buffer.xml").read_text() == (
        '<?xml version="1.0"?>\n'
        '<buffer begin_seq="000000" end_seq="000003" segment_count="1" stream_check="enabled">\n'
        '  <stream location="" seedname="BHZ" type="D" begin_time="2024/05/01 00:00:00.0000" '
        'end_time="2024/05/01 00:00:30.0000" begin_recno="000000" end_recno="000003" '
        'begin_seq="000000" end_seq="000003" gap_check="disabled" gap_treshold="0">\n'
        '    <segment end_time="2024/05/01 00:00:30.0000" end_recno="000003" end_seq="000003"/>\n'
        '  </stream>\n'
        '</buffer>\n')


def test_empty_buffer_xml_without_stream_check(tmp_path):
    buf = opened(tmp_path, stream_check=False)
    buf.append_many(series(25))
    assert buf.streams == [] and buf.segment_count == 1
    buf.close()
    assert (tmp_path / "XX.TEST" / "buffer.xml").read_text() == (
        '<?xml version="1.0"?>\n<buffer begin_seq="000000" end_seq="000019" '
        'segment_count="1" stream_check="disabled"/>\n')


def test_rotation_and_deletion(tmp_path):
    buf = opened(tmp_path)                     # 3 segments of 10 records, ring 10
    recs = series(45)
    for r in recs[:12]:
        buf.append(r)
    assert buf.append_many(recs[12:45]) == 12
    assert listing(tmp_path) == {"0000000000000014": 5120, "000000000000001E": 5120,
                                 "0000000000000028": 2560}
    assert buf.segment_names == ["0000000000000014", "000000000000001E", "0000000000000028"]
    assert buf.oldest_position == 20 and buf.begin_position == 20 and buf.next_position == 45
    assert buf.segment_count == 3
    assert buf.read(19) is None and buf.read(20) == recs[20] and buf.read(44) == recs[44]
    (s,) = buf.streams
    # the index forgot the deleted segments: begins where segment 0x14 begins
    assert (s.begin_seq, s.begin_recno, s.begin_time_us) == (20, 20, T0 + 200 * 10**6)
    assert [g.end_seq for g in s.segments] == [30, 40, 45]


def test_append_many_equals_append(tmp_path):
    recs = series(40) + series(17, "LOG", log=True)
    recs = [r for pair in zip(recs[:17], recs[40:]) for r in pair] + recs[17:40]
    a = opened(tmp_path / "a", segsize=7, segments=4)
    b = opened(tmp_path / "b", segsize=7, segments=4)
    for r in recs:
        a.append(r)
    b.append_many(recs[:5])
    b.append_many(iter(recs[5:33]))
    b.append_many([bytearray(r) for r in recs[33:]])
    assert snapshot(a) == snapshot(b)
    assert listing(tmp_path / "a") == listing(tmp_path / "b")
    for name in listing(tmp_path / "a"):
        assert (segdir(tmp_path / "a") / name).read_bytes() == \
            (segdir(tmp_path / "b") / name).read_bytes()
    assert a.buffer_xml_text() == b.buffer_xml_text()
    # one record per call, as the real-time path stores them (also with the
    # index deferred until after the clients got the record)
    c = opened(tmp_path / "c", segsize=7, segments=4)
    for i, r in enumerate(recs):
        c.append_many([bytearray(r) if i % 3 == 0 else r], defer_index=i % 2 == 1)
        if i % 4 == 1:
            c.index_pending()
    assert snapshot(a) == snapshot(c)
    assert a.buffer_xml_text() == c.buffer_xml_text()
    for name in listing(tmp_path / "a"):
        assert (segdir(tmp_path / "a") / name).read_bytes() == \
            (segdir(tmp_path / "c") / name).read_bytes()


def test_read_across_memory_and_disk(tmp_path):
    buf = opened(tmp_path, segments=5)         # ring holds the newest 10
    recs = series(40)
    buf.append_many(recs)
    assert buf.read_range(12, 25) == recs[12:37]          # disk 12..29 + memory 30..36
    assert buf.read_range(25, 100) == recs[25:]
    assert buf.read_range(38, 10) == recs[38:]
    assert buf.read_range(40, 5) == [] and buf.read_range(10, 0) == []
    assert [buf.read(i) for i in range(10, 40)] == recs[10:]
    # what comes from disk really is read from the segment files
    (segdir(tmp_path) / "0000000000000014").write_bytes(b"\1" * 5120)
    assert buf.read(25) == b"\1" * 512 and buf.read(35) == recs[35]


def test_slow_reader_falls_off_the_disk(tmp_path):
    buf = opened(tmp_path, segments=2)
    recs = series(35)
    buf.append_many(recs[:15])
    assert buf.oldest_position == 0 and buf.read(3) == recs[3]
    buf.append_many(recs[15:])
    assert listing(tmp_path) == {"0000000000000014": 5120, "000000000000001E": 2560}
    assert buf.oldest_position == 20
    assert buf.read(3) is None and buf.read_range(3, 5) == []
    assert buf.position_of_seq(3) is None
    assert buf.resume_position(3) == 20 and buf.resume_position(27) == 27
    assert buf.read_range(buf.resume_position(3), 3) == recs[20:23]


def test_memory_ring_larger_than_disk(tmp_path):
    buf = opened(tmp_path, segments=2, buffers=50)
    recs = series(45)
    buf.append_many(recs)
    assert buf.begin_position == 30 and buf.oldest_position == 0
    assert buf.read(0) == recs[0] and buf.read_range(0, 45) == recs
    assert buf.position_of_seq(5) == 5


def test_min_ring_enlarges_memory(tmp_path):
    buf = StationBuffer(config(buffers=10), str(tmp_path), min_ring=30)
    buf.open()
    assert buf.ring_size == 30


# -- restart and crash recovery ----------------------------------------------------------

def test_restart_after_clean_close(tmp_path):
    kw = dict(segments=4, gap_check_pattern="Z$", gap_treshold=1000)
    recs = series(12) + series(8, first=14) + series(6, "LOG", log=True)
    ref = opened(tmp_path / "ref", **kw)
    ref.append_many(recs + series(5, first=22))
    buf = opened(tmp_path, **kw)
    buf.append_many(recs)
    before = snapshot(buf)
    buf.close()
    xml = tmp_path / "XX.TEST" / "buffer.xml"
    assert xml.exists()
    again = opened(tmp_path, **kw)
    assert not xml.exists()                        # deleted once read
    assert snapshot(again) == before
    assert again.next_position == len(recs)
    assert again.read(len(recs) - 1) == recs[-1] and again.read_range(0, 100) == recs
    (s, _) = again.streams
    assert s.gaps == [(T0 + 120 * 10**6, T0 + 140 * 10**6)]
    assert again.append(series(1, first=22)[0]) == len(recs)   # numbering continues
    again.append_many(series(4, first=23))
    assert again.buffer_xml_text() == ref.buffer_xml_text()


def test_crash_drops_torn_record_and_rebuilds_index(tmp_path):
    kw = dict(segments=5, gap_check_pattern="HZ", gap_treshold=1000)
    recs = series(14) + series(6, "LOG", log=True) + series(6, first=20)
    buf = opened(tmp_path, **kw)
    buf.append_many(recs)
    crash(buf)
    last = segdir(tmp_path) / "0000000000000014"
    assert last.stat().st_size == 6 * 512
    with open(last, "r+b") as fh:                  # the crash tore the last record
        fh.truncate(5 * 512 + 100)
    ref = opened(tmp_path / "ref", **kw)
    ref.append_many(recs[:-1])
    again = opened(tmp_path, **kw)
    assert last.stat().st_size == 5 * 512          # torn record dropped
    assert again.next_position == len(recs) - 1     # no blank records
    assert snapshot(again) == snapshot(ref)        # index rebuilt from the headers
    assert again.buffer_xml_text() == ref.buffer_xml_text()
    assert again.append(recs[-1]) == len(recs) - 1
    assert again.read_range(0, 100) == recs


def test_crash_without_stream_check(tmp_path):
    buf = opened(tmp_path, stream_check=False)
    buf.append_many(series(13))
    crash(buf)
    again = opened(tmp_path, stream_check=False)
    assert again.next_position == 13 and again.streams == []
    assert again.append(series(1)[0]) == 13


def test_blank_and_unparsable_records_are_stored_not_indexed(tmp_path):
    buf = opened(tmp_path)
    recs = [make_record(0), make_record(0, blank=True), make_record(1, little_endian=True),
            make_record(1, start_us=T0 + 10 * 10**6)]
    assert buf.append_many(recs) == 0 and buf.next_position == 4
    assert buf.read(1) == bytes(512)
    (s,) = buf.streams
    assert (s.begin_seq, s.end_seq, s.end_recno) == (0, 4, 2)


def test_wrap_of_the_24_bit_sequence(tmp_path):
    d = segdir(tmp_path)
    d.mkdir(parents=True)
    (d / "0000000000FFFFFE").write_bytes(make_record(0))
    buf = opened(tmp_path, segsize=2)
    assert buf.next_position == 0xFFFFFF and buf.oldest_position == 0xFFFFFE
    (s,) = buf.streams                              # crash: rebuilt from the header
    assert (s.begin_seq, s.end_seq) == (0xFFFFFE, 0xFFFFFF)
    recs = series(3, first=1)
    assert [buf.append(r) for r in recs] == [0xFFFFFF, 0x1000000, 0x1000001]
    assert [buf.seq_of(p) for p in (0xFFFFFF, 0x1000000, 0x1000001)] == [0xFFFFFF, 0, 1]
    assert sorted(listing(tmp_path)) == ["0000000000FFFFFE", "0000000001000000"]
    assert buf.position_of_seq(0) == 0x1000000 and buf.position_of_seq(0xFFFFFE) == 0xFFFFFE
    assert buf.position_of_seq(2) is None and buf.end_seq == 2
    assert buf.read(0x1000000) == recs[1]
    (s,) = buf.streams
    assert (s.begin_seq, s.end_seq) == (0xFFFFFE, 2)
    buf.close()
    text = (tmp_path / "XX.TEST" / "buffer.xml").read_text()
    assert 'begin_seq="FFFFFE" end_seq="000002" segment_count="2"' in text
    again = opened(tmp_path, segsize=2)
    (s,) = again.streams
    assert (s.begin_position, s.end_position) == (0xFFFFFE, 0x1000002)
    assert again.position_for_time(T0) == 0xFFFFFE
    assert again.position_for_time(T0 + 25 * 10**6) == 0x1000000


def test_reads_a_seiscomp_directory_with_more_segments_than_configured(tmp_path):
    kw = dict(gap_check_pattern="XXXXX")           # as SeisComP's default (treshold != 0)
    big = opened(tmp_path, segments=5, **kw)
    big.append_many(series(45))
    big.close()
    ref = opened(tmp_path / "ref", segments=3, **kw)
    ref.append_many(series(45))
    small = opened(tmp_path, segments=3, **kw)
    assert small.segment_names == ["0000000000000014", "000000000000001E", "0000000000000028"]
    assert small.oldest_position == 20
    assert small.buffer_xml_text() == ref.buffer_xml_text()


def test_unusable_buffer_xml_rebuilds_the_index(tmp_path):
    buf = opened(tmp_path)
    buf.append_many(series(12))
    expected = snapshot(buf)
    buf.close()
    xml = tmp_path / "XX.TEST" / "buffer.xml"
    for bad in ("<buffer", xml.read_text().replace('seedname="BHZ"', 'seedname="TOOLONG"'),
                xml.read_text().replace('end_seq="00000C" segment', 'end_seq="000005" segment')):
        xml.write_text(bad)
        again = opened(tmp_path)
        assert snapshot(again) == expected and not xml.exists()
        crash(again)


def test_saved_gap_treshold_zero_is_restored_as_100(tmp_path):
    buf = opened(tmp_path, gap_check_pattern="")
    buf.append_many(series(3))
    assert buf.streams[0].gap_treshold == 0
    buf.close()
    again = opened(tmp_path, gap_check_pattern="")
    assert again.streams[0].gap_treshold == 100


def test_open_errors_name_the_path(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as exc:
        StationBuffer(config(), str(tmp_path / "file")).open()
    assert str(tmp_path / "file") in str(exc.value)
    d = segdir(tmp_path / "dup")
    d.mkdir(parents=True)
    (d / "A").write_bytes(make_record(0))
    (d / "000000000000000A").write_bytes(make_record(0))
    with pytest.raises(ValueError, match="000000000000000A|/A"):
        StationBuffer(config(), str(tmp_path / "dup")).open()
    with pytest.raises(ValueError, match="gap_check_pattern"):
        StationBuffer(config(gap_check_pattern="(", gap_treshold=100), str(tmp_path))


def test_foreign_files_in_segments_are_ignored(tmp_path):
    d = segdir(tmp_path)
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("hello")
    (d / "0000000000000005").write_bytes(b"".join(series(2, first=5)))
    buf = opened(tmp_path)
    assert buf.next_position == 7 and buf.oldest_position == 5
    assert buf.read(4) is None and buf.read(5) is not None


# -- stream index ------------------------------------------------------------------------

def test_gaps_overlaps_and_patterns(tmp_path):
    buf = opened(tmp_path, segments=10, gap_check_pattern="^00BH", gap_treshold=100000)
    s10 = 10 * 10**6
    recs = [make_record(1, "BHZ", "00", T0), make_record(2, "BHZ", "00", T0 + s10),
            make_record(3, "BHZ", "00", T0 + 3 * s10),              # 10 s gap
            make_record(4, "BHZ", "00", T0 + 2 * s10),              # out of order: overlap
            make_record(5, "BHZ", "00", T0 + 3 * s10 + 50000),      # within the treshold
            make_record(1, "LHZ", "00", T0), make_record(2, "LHZ", "00", T0 + 5 * s10),
            make_record(1, "LOG", "", T0, nsamp=20, log=True),
            make_record(2, "LOG", "", T0 + 5 * s10, nsamp=20, log=True)]
    buf.append_many(recs)
    bhz, lhz, log_ = sorted(buf.streams, key=lambda s: s.seedname)
    assert (bhz.gap_check, lhz.gap_check, log_.gap_check) == (True, False, False)
    assert bhz.gaps == [(T0 + 2 * s10, T0 + 3 * s10), (T0 + 4 * s10, T0 + 2 * s10)]
    assert lhz.gaps == [] and log_.gaps == []
    assert log_.type == "L" and log_.end_time_us == T0 + 5 * s10
    assert [s.location for s in buf.streams] == ["", "00", "00"]      # INFO order


def test_end_time_uses_seiscomp_arithmetic(tmp_path):
    buf = opened(tmp_path)
    # 3 samples at 1/3 Hz... rate -3 (3 s per sample): 9 s; 7 samples at 3 Hz: 2.333333 s
    buf.append(make_record(1, "VHZ", start_us=T0 + 1234500, nsamp=3, rate=1 / 3))
    buf.append(make_record(1, "HHZ", start_us=T0 + 1234500, nsamp=7, rate=3))
    hhz, vhz = buf.streams
    assert vhz.end_time_us == T0 + 1234500 + 9 * 10**6
    assert hhz.end_time_us == T0 + 1234500 + 2333333                # floor of 2333333.33
    assert format_time(hhz.end_time_us) == "2024/05/01 00:00:03.5678"
    assert parse_time("2024/05/01 00:00:03.5678") == T0 + 3567800
    with pytest.raises(ValueError):
        parse_time("1800/05/01 00:00:03.5678")


# -- time lookup (docs §2.7) -------------------------------------------------------------

def test_position_for_time_has_segment_granularity(tmp_path):
    buf = opened(tmp_path, segments=10)
    buf.append_many(series(35))                    # record i covers T0+10i .. T0+10(i+1) s
    s = 10**6
    assert buf.position_for_time(T0 - 1000 * s) == 0
    assert buf.position_for_time(T0 + 95 * s) == 0          # segment 0 ends at T0+100 s
    assert buf.position_for_time(T0 + 150 * s) == 10
    assert buf.position_for_time(T0 + 200 * s) == 20
    assert buf.position_for_time(T0 + 345 * s) == 30
    assert buf.position_for_time(T0 + 351 * s) is None      # after the end of every stream
    # SeisComP quirk: begin == end of the newest stream -> station begin
    assert buf.position_for_time(T0 + 350 * s) == 0
    assert buf.time_cmp(T0 - s) == -1 and buf.time_cmp(T0 + 351 * s) == 1
    assert buf.time_cmp(T0 + 100 * s) == 0
    # no matching stream: the next new record
    none = lambda loc, cha, typ: False             # noqa: E731
    assert buf.position_for_time(T0 + 150 * s, none) == 35 and buf.time_cmp(T0, none) == 0
    # DATA n time: the later of n and the time position, as 24-bit numbers
    assert buf.time_to_seq(T0 + 150 * s) == 10
    assert buf.time_to_seq(T0 + 150 * s, 25) == 25 and buf.time_to_seq(T0 + 150 * s, 5) == 10
    assert buf.time_to_seq(T0 + 351 * s, 5) == -1


def test_position_for_time_takes_the_earliest_matching_stream(tmp_path):
    buf = opened(tmp_path, segments=10)
    s = 10**6
    buf.append_many(series(20))                                   # BHZ T0 .. T0+200 s
    buf.append_many(series(10, "LHZ", t0=T0 - 500 * s, step_s=100))   # LHZ T0-500 .. T0+500
    assert buf.position_for_time(T0 + 150 * s) == 10
    bhz_only = lambda loc, cha, typ: cha == "BHZ"  # noqa: E731
    lhz_only = lambda loc, cha, typ: cha == "LHZ"  # noqa: E731
    assert buf.position_for_time(T0 + 150 * s, bhz_only) == 10
    assert buf.position_for_time(T0 + 150 * s, lhz_only) == 20
    assert buf.position_for_time(T0 + 250 * s, bhz_only) is None
    assert buf.position_for_time(T0 + 250 * s) == 20


def test_position_for_time_without_stream_check(tmp_path):
    buf = opened(tmp_path, stream_check=False)
    buf.append_many(series(15))
    assert buf.position_for_time(T0) == 15 and buf.time_cmp(T0 + 10**12) == 0

"""Packet framing in C against the Python record classifier."""
import numpy as np
import pytest

from conftest import golden_case, read_sl_records
from seedlink_fast import mseed, records
from seedlink_fast._ext.packets import frame_records


def test_framing_and_kinds_match_the_python_classifier():
    recs = read_sl_records(golden_case("mseed_passthrough") / "expected.sl")
    blank = b"\0" * 512
    recs = recs + [blank]
    start = 0xFFFFFF - 3                       # crosses the 24-bit wrap
    data, kinds = frame_records(start, recs)
    assert len(data) == 520 * len(recs) and len(kinds) == len(recs)
    for i, rec in enumerate(recs):
        packet = data[i * 520:(i + 1) * 520]
        assert packet[:8] == b"SL%06X" % ((start + i) % (1 << 24))
        assert packet[8:] == rec
        expected = None if records.is_blank(rec) else records.record_type(rec)
        assert (chr(kinds[i]) if kinds[i] else None) == expected
    assert kinds[-1] == 0


def test_undeterminable_and_bad_records():
    rec = bytearray(mseed.pack(np.arange(10, dtype=np.int32), network="XX", station="S",
                               location="", channel="HHZ", starttime_ns=0, sample_rate=1))
    rec[46:48] = b"\x03\x00"                   # blockette chain outside the record
    _, kinds = frame_records(0, [bytes(rec)])
    assert kinds == b"\0" and records.record_type(bytes(rec)) is None
    with pytest.raises(ValueError, match="512"):
        frame_records(0, [b"short"])

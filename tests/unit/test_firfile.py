"""Tests of the filters.fir reader (seedlink_fast.firfile)."""

import logging
from pathlib import Path

import numpy as np
import pytest

from seedlink_fast.errors import ConfigError
from seedlink_fast.firfile import (FirFilter, default_filters_path,
                                   expand_taps, load_filters, parse_filters)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE_FIR = SHARED / "reference" / "seiscomp-filters.fir"

# name, length, gain, decimation (docs/seedlink-reference.md section 4.2)
SEISCOMP_FILTERS = [
    ("MP", 50, 1.0, 4), ("LP", 200, 4.0, 5), ("VLP", 400, 4.0, 10),
    ("ULP", 400, 1.0, 10), ("F260", 260, 1.0, 10), ("F260M", 260, 1.0, 10),
    ("FS2D5", 160, 1.0, 5), ("FS2D5M", 160, 1.0, 5), ("F64C", 64, 1.0, 2),
    ("F64CM", 64, 1.0, 2), ("F96C", 96, 1.0, 2), ("F96CM", 96, 1.0, 2),
    ("NA3", 30, 1.0, 3),
]


@pytest.fixture(scope="module")
def reference_filters():
    if not REFERENCE_FIR.exists():
        pytest.skip("shared reference data not available")
    return load_filters(str(REFERENCE_FIR))


def fir_text(*filters, count=None):
    """Build a filters.fir text from (name, length, gain, deci, taps)."""
    lines = ["%d number of filters" % (len(filters) if count is None
                                        else count)]
    for name, length, gain, deci, taps in filters:
        lines += ["%s name" % name, "%d points" % length, "%r gain" % gain,
                  "%d decimation" % deci, " ".join("%r" % t for t in taps)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# SeisComP's own file
# --------------------------------------------------------------------------

def test_reference_file_has_the_13_seiscomp_filters(reference_filters):
    got = [(f.name, f.length, f.gain, f.decimation)
           for f in reference_filters.values()]
    assert got == SEISCOMP_FILTERS


def test_reference_filters_have_full_tap_lists(reference_filters):
    for f in reference_filters.values():
        assert isinstance(f, FirFilter)
        assert f.taps.dtype == np.float64
        assert f.taps.shape == (f.length,)
        assert f.minimum_phase == f.name.endswith("M")


def test_minimum_phase_taps_stay_in_file_order(reference_filters):
    # The file stores M filters time-reversed: the big taps sit at the end.
    f96cm = reference_filters["F96CM"]
    assert int(np.argmax(f96cm.taps)) == 90
    assert not np.allclose(f96cm.taps, f96cm.taps[::-1])


def test_zero_phase_filters_are_mirrored(reference_filters):
    mp = reference_filters["MP"]
    # First and last stored values of MP as written in the file.
    assert mp.taps[0] == -2.54066472e-05
    assert mp.taps[24] == 2.33582660e-01
    assert mp.taps[25] == mp.taps[24]
    assert mp.taps[49] == mp.taps[0]
    for f in reference_filters.values():
        if not f.minimum_phase:
            np.testing.assert_array_equal(f.taps, f.taps[::-1])


def test_dc_gain_shows_correct_expansion(reference_filters):
    # A wrong mirror would halve or double the DC gain.  F64CM really has a
    # DC gain of about 0.25 (golden README, fact 8).
    for f in reference_filters.values():
        expected = 0.2528 if f.name == "F64CM" else 1.0
        assert f.taps.sum() == pytest.approx(expected, abs=0.015), f.name


def test_packaged_file_matches_reference(reference_filters):
    path = default_filters_path()
    assert path.name == "filters.fir" and path.is_file()
    assert load_filters(path) == reference_filters


def test_shift_of_zero_and_minimum_phase(reference_filters):
    assert reference_filters["FS2D5"].shift == 79.5
    assert reference_filters["FS2D5M"].shift == 0.0


# --------------------------------------------------------------------------
# Synthetic files
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name, length, stored, full", [
    ("ODD", 5, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 2.0, 1.0]),
    ("EVEN", 4, [1.0, 2.0], [1.0, 2.0, 2.0, 1.0]),
    ("ONE", 1, [7.0], [7.0]),
    ("ODDM", 3, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
])
def test_tap_expansion(name, length, stored, full):
    filters = parse_filters(fir_text((name, length, 1.0, 1, stored)))
    np.testing.assert_array_equal(filters[name].taps, full)
    np.testing.assert_array_equal(
        expand_taps(stored, length, name.endswith("M")), full)


def test_only_half_the_taps_are_read_for_symmetric_filters():
    # The 4th value belongs to the next "header": it becomes the next name.
    text = "2\nA\n4\n1.0\n2\n1 2 B\n2\n1.0\n1\n5\n"
    filters = parse_filters(text)
    np.testing.assert_array_equal(filters["A"].taps, [1, 2, 2, 1])
    np.testing.assert_array_equal(filters["B"].taps, [5, 5])


def test_header_lines_read_first_token_and_skip_blank_lines():
    text = ("1 filters\n\nX comment here\n  6abc points\n2.5e0 gain\n"
            "\n3 decimation\n1\n2\n3\n")
    f = parse_filters(text)["X"]
    assert (f.length, f.gain, f.decimation) == (6, 2.5, 3)
    np.testing.assert_array_equal(f.taps, [1, 2, 3, 3, 2, 1])


def test_coefficients_may_span_lines_in_any_layout():
    text = "1\nM2M\n4\n1\n2\n  1.0e-1\n\n-2.0E-01 3\n   4.\n"
    np.testing.assert_array_equal(parse_filters(text)["M2M"].taps,
                                  [0.1, -0.2, 3.0, 4.0])


def test_header_remainder_limit_is_exact():
    ok = "1\nX" + " " * 98 + "\n2\n1.0\n1\n1\n"   # 98 chars + newline = 99
    assert parse_filters(ok)["X"].length == 2
    bad = "1\nX" + " " * 99 + "\n2\n1.0\n1\n1\n"  # 99 chars + newline = 100
    with pytest.raises(ConfigError) as exc:
        parse_filters(bad, "f.fir")
    assert exc.value.lineno == 2 and exc.value.filename == "f.fir"
    assert "too long" in exc.value.reason


def test_header_line_of_120_characters_is_an_error():
    long_gain = "1.0 " + "x" * 116
    text = "1\nX\n2\n%s\n1\n1\n" % long_gain
    with pytest.raises(ConfigError) as exc:
        parse_filters(text, "long.fir")
    assert exc.value.lineno == 4
    assert "long.fir:4:" in str(exc.value)


def test_length_below_decimation_is_an_error():
    text = fir_text(("OK", 2, 1.0, 1, [1.0]), ("BAD", 4, 1.0, 5, [1, 2]))
    with pytest.raises(ConfigError) as exc:
        parse_filters(text, "d.fir")
    assert "BAD" in exc.value.reason and "decimation" in exc.value.reason
    assert exc.value.lineno == 7     # line of the name


def test_length_above_10000_is_an_error():
    text = fir_text(("HUGE", 10001, 1.0, 1, [0.0] * 5001))
    with pytest.raises(ConfigError, match="HUGE"):
        parse_filters(text)
    assert parse_filters(fir_text(("MAX", 10000, 1.0, 1, [0.0] * 5000)))


@pytest.mark.parametrize("length, deci", [(0, 0), (4, 0), (-2, -4)])
def test_non_positive_length_or_decimation_is_an_error(length, deci):
    with pytest.raises(ConfigError, match="positive"):
        parse_filters(fir_text(("Z", length, 1.0, deci, [1.0, 1.0])))


def test_duplicate_filter_warns_and_keeps_first(caplog):
    text = fir_text(("A", 2, 1.0, 1, [1.0]), ("A", 2, 3.0, 2, [9.0]),
                    ("B", 2, 1.0, 1, [2.0]))
    with caplog.at_level(logging.WARNING, logger="seedlink_fast.firfile"):
        filters = parse_filters(text, "dup.fir")
    assert list(filters) == ["A", "B"]
    assert filters["A"].gain == 1.0 and filters["A"].taps[0] == 1.0
    assert any("dup.fir:7:" in r.getMessage()
               and "already defined" in r.getMessage()
               for r in caplog.records)


def test_duplicates_across_files_keep_the_first(tmp_path, caplog):
    a = tmp_path / "a.fir"
    b = tmp_path / "b.fir"
    a.write_text(fir_text(("A", 2, 1.0, 1, [1.0])))
    b.write_text(fir_text(("A", 2, 2.0, 1, [5.0]), ("C", 2, 1.0, 2, [3.0])))
    with caplog.at_level(logging.WARNING):
        filters = load_filters("%s, %s" % (a, b))
    assert filters["A"].gain == 1.0 and "C" in filters
    assert "already defined" in caplog.text
    assert load_filters([a, b]) == filters
    assert load_filters("%s %s" % (a, b)) == filters


def test_fewer_filters_than_announced_is_an_error():
    text = fir_text(("A", 2, 1.0, 1, [1.0]), count=2)
    with pytest.raises(ConfigError, match="2 filters announced, only 1"):
        parse_filters(text, "count.fir")


def test_more_filters_than_announced_are_ignored(caplog):
    text = fir_text(("A", 2, 1.0, 1, [1.0]), ("B", 2, 1.0, 1, [1.0]),
                    count=1)
    with caplog.at_level(logging.WARNING):
        filters = parse_filters(text)
    assert list(filters) == ["A"]
    assert "ignored" in caplog.text


def test_truncated_coefficients_are_an_error():
    text = "1\nTRUNCM\n4\n1.0\n1\n0.1 0.2\n0.3\n"
    with pytest.raises(ConfigError) as exc:
        parse_filters(text, "t.fir")
    assert "TRUNCM" in exc.value.reason and "4 of 4" in exc.value.reason
    assert "end of file" in exc.value.reason


def test_bad_coefficient_is_reported_with_its_line():
    text = "1\nA\n6\n1.0\n1\n0.1\n0.2x\n"
    with pytest.raises(ConfigError) as exc:
        parse_filters(text, "bad.fir")
    assert exc.value.lineno == 7
    assert "'x'" in exc.value.reason


def test_bad_header_values_are_errors():
    with pytest.raises(ConfigError, match="number of filters"):
        parse_filters("many\n")
    with pytest.raises(ConfigError, match="filter length") as exc:
        parse_filters("1\nA\nlong\n1.0\n1\n1\n")
    assert exc.value.lineno == 3
    with pytest.raises(ConfigError, match="digital gain"):
        parse_filters("1\nA\n2\nhigh\n1\n1\n")


def test_empty_file_is_an_error():
    with pytest.raises(ConfigError, match="end of file"):
        parse_filters("", "empty.fir")


def test_missing_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.fir"
    with pytest.raises(ConfigError) as exc:
        load_filters(missing)
    assert exc.value.filename == str(missing)

"""Shared fixtures: where ../shared is, and helpers to read golden captures."""
import os
import pathlib
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED = pathlib.Path(os.environ.get("SEEDLINK_FAST_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "reference" / "golden"

# tests/reference holds the pure-Python twins (never shipped)
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def golden_case(name):
    """Path of a golden case directory; skips the test when ../shared is absent."""
    path = GOLDEN / name
    if not path.is_dir():
        pytest.skip("golden case %s not available (../shared missing)" % name)
    return path


def read_sl_records(path):
    """The 512-byte records of a SeedLink capture of 520-byte packets."""
    raw = pathlib.Path(path).read_bytes()
    assert len(raw) % 520 == 0, "capture is not a whole number of SL packets"
    return [raw[i + 8:i + 520] for i in range(0, len(raw), 520)]


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip("../shared not available")
    return SHARED

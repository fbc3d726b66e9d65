"""Shared fixtures: where ../shared is, and helpers to read golden captures."""
import os
import pathlib
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED = pathlib.Path(os.environ.get("SEEDLINK_FAST_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "reference" / "golden"

# tests/reference holds the pure-Python twins (never shipped);
# tests/integration the server-process helpers
for _path in (TESTS, TESTS / "integration"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


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


@pytest.fixture
def start_server(tmp_path):
    """start(ini_path, port) -> a running ServerProcess; stopped afterwards."""
    from serverproc import ServerProcess

    servers = []

    def start(ini_path, port):
        srv = ServerProcess(ini_path, port, tmp_path)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        if srv.proc.poll() is None:
            srv.stop()


@pytest.fixture
def server(tmp_path, start_server):
    """A server with .dummy and XX.TEST (stream100 from 10 minutes of 100 Hz ZNE),
    settled: every record of the plugin input is stored."""
    from serverproc import free_port, make_station_ini

    if not SHARED.is_dir():
        pytest.skip("../shared not available")
    port = free_port()
    srv = start_server(make_station_ini(tmp_path, port), port)
    srv.wait_settled()
    return srv

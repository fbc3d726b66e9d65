"""RawClient against the independent reference device (tests/rawref_device.py):
every RAW version, sample type and byte order, version probing, odd splits,
bad answers and broken streams, idle timeout and reconnect back-off.
Loopback only; every wait is bounded."""
import asyncio
import datetime
import logging
import re
import socket
import threading
import time

import numpy as np
import pytest

from rawref_device import Chan, Packet, RefDevice, packet, us_of
from seedlink_fast.raw.client import RawClient

T0 = datetime.datetime(2024, 3, 1, 12, 34, 56, 789012)
TYPES = ["int8", "int16", "int32", "float32", "float64"]
INT_TYPES = TYPES[:3]
VALUES = {
    "int8": [0, 1, -1, 127, -128, -5, 60],
    "int16": [0, -32768, 32767, -2, 1234],
    "int32": [0, -2 ** 31, 2 ** 31 - 1, -7, 100000],
    "float32": [0.0, -1.5, 3.25, 1e20, -2.5e-8],
    "float64": [0.0, -1.5, 3.141592653589793, 1e300, -2.5e-300],
}


def run_client(client, until, timeout=5.0):
    """Run client.run() until until() is true (or timeout), then stop it.
    Returns the seconds it took to stop."""
    async def main():
        task = asyncio.ensure_future(client.run())
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.005)
        started = time.monotonic()
        client.stop()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started
    return asyncio.run(main())


class Collector:
    def __init__(self):
        self.packets = []
        self.sessions = []
        self.disconnects = []

    def on_packet(self, spec, us, quality, samples):
        self.packets.append((spec, us, quality, samples.copy()))

    def on_session(self, version, specs):
        self.sessions.append((version, specs))

    def on_disconnect(self, reason):
        self.disconnects.append(reason)

    def client(self, port, ids, **kw):
        kw.setdefault("reconnect_delay", 0.01)
        kw.setdefault("reconnect_max", 0.05)
        return RawClient("127.0.0.1", port, ids, on_packet=self.on_packet,
                         on_session=self.on_session, on_disconnect=self.on_disconnect, **kw)


def all_channels(version):
    """Channel id -> Chan for every type and byte order the version has."""
    types = INT_TYPES if version == "RAW 1.0" else TYPES
    chans = {}
    cid = 1
    for samptype in types:
        for order in ("big", "little"):
            chans[cid] = Chan(100 * cid, order, samptype)
            cid += 1
    return chans


@pytest.mark.parametrize("version", ["RAW 1.0", "RAW 1.1", "RAW 2.0"])
def test_every_type_and_byte_order(version):
    chans = all_channels(version)
    packets = []
    for k in range(3):
        for cid, chan in chans.items():
            when = T0 + datetime.timedelta(seconds=k)
            packets.append(packet(cid, when, VALUES[chan.samptype], quality=90 - cid))
    got = Collector()
    with RefDevice(version, chans, packets) as dev:
        client = got.client(dev.port, list(chans), version=version[4:])
        run_client(client, lambda: len(got.packets) == len(packets))
        assert dev.version_lines == [version]
        assert dev.requested == [list(chans)]
    assert len(got.packets) == len(packets)
    assert client.packets == len(packets)
    assert client.samples == sum(len(p.values) for p in packets)
    assert got.sessions[0][0] == version
    for pkt, (spec, us, quality, samples) in zip(packets, got.packets):
        chan = chans[pkt.cid]
        assert spec.id == pkt.cid and spec.rate == chan.rate
        assert spec.samptype == chan.samptype and spec.endianness == chan.endianness
        assert us == us_of(pkt.when)
        assert quality == (pkt.quality if version == "RAW 2.0" else 100)
        assert samples.dtype.kind == ("f" if chan.samptype.startswith("float") else "i")
        if chan.samptype == "float32":
            np.testing.assert_array_equal(samples, np.float32(pkt.values))
        else:
            np.testing.assert_array_equal(samples, pkt.values)
    # the int8 negatives stay negative whatever the byte order
    int8 = [p for p in got.packets if p[0].samptype == "int8"]
    assert all(s.min() == -128 for _, _, _, s in int8)
    # stop() is a clean end: no error left behind
    assert client.last_error is None and got.disconnects[-1] == "stopped"


@pytest.mark.parametrize("device_version,probes", [
    ("RAW 2.0", ["RAW 2.0"]),
    ("RAW 1.1", ["RAW 2.0", "RAW 1.1"]),
    ("RAW 1.0", ["RAW 2.0", "RAW 1.1", "RAW 1.0"]),
])
def test_auto_probing_lands_on_the_device_version_and_keeps_it(device_version, probes):
    chans = {3: Chan(100, "big", "int16")}
    got = Collector()
    with RefDevice(device_version, chans, [packet(3, T0, [1, -2, 3])], after="close") as dev:
        client = got.client(dev.port, [3])
        run_client(client, lambda: len(got.packets) >= 2)
        # probing, then a reconnect (the device closes) goes straight to the version found
        assert dev.version_lines[:len(probes) + 1] == probes + [device_version]
    assert {v for v, _ in got.sessions} == {device_version}
    assert got.packets[0][3].tolist() == [1, -2, 3]


def test_pinned_version_never_probes_and_says_why():
    got = Collector()
    with RefDevice("RAW 1.0", {1: Chan(100, "big", "int8")}) as dev:
        client = got.client(dev.port, [1], version="RAW 2.0")
        run_client(client, lambda: dev.connections >= 3)
        assert set(dev.version_lines) == {"RAW 2.0"}
        assert "closed the connection on version 'RAW 2.0'" in got.disconnects[0]
    assert got.packets == []


def test_wrong_echo_is_a_clear_error():
    """A peer answering something else than the version line is refused."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(5)

        def answer():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                conn.recv(100)
                conn.sendall(b"HTTP/1.1 400 Bad Request\n")
                conn.recv(100)          # until the client closes

        peer = threading.Thread(target=answer, daemon=True)
        peer.start()
        got = Collector()
        client = got.client(listener.getsockname()[1], [1], version="1.1")
        run_client(client, lambda: len(got.disconnects) >= 1)
        peer.join(5)
    assert got.disconnects[0] == ("device answered 'HTTP/1.1 400 Bad Request' to version "
                                  "'RAW 1.1'")


@pytest.mark.parametrize("chunk", [1, 7, 13, 19, 1000])
def test_packets_split_at_odd_sizes(chunk):
    chans = {1: Chan(100, "little", "int32"), 2: Chan(50, "big", "float64"),
             9: Chan(10, "big", "int8")}
    rng = np.random.default_rng(chunk)
    packets = []
    for k in range(12):
        cid = (1, 2, 9)[k % 3]
        kind = chans[cid].samptype
        n = int(rng.integers(0, 30))
        if kind == "int32":
            values = rng.integers(-2 ** 31, 2 ** 31, n).tolist()
        elif kind == "int8":
            values = rng.integers(-128, 128, n).tolist()
        else:
            values = rng.normal(0, 1e6, n).tolist()
        packets.append(packet(cid, T0 + datetime.timedelta(milliseconds=k), values, k))
    got = Collector()
    with RefDevice("RAW 2.0", chans, packets, chunk=chunk) as dev:
        client = got.client(dev.port, [1, 2, 9])
        run_client(client, lambda: len(got.packets) == len(packets))
    assert [(s.id, us, q, list(v)) for s, us, q, v in got.packets] == [
        (p.cid, us_of(p.when), p.quality, p.values) for p in packets]


BAD_ANSWERS = {
    "rate": (["SAMPLING RATE", "100.0", "SAMPLE ENDIANNESS", "big", "SAMPLE TYPE", "int16"],
             "sampling rate '100.0' is not a decimal integer"),
    "endianness": (["SAMPLING RATE", "100", "SAMPLE ENDIANNESS", "middle", "SAMPLE TYPE",
                    "int16"], "unknown sample endianness 'middle'"),
    "type": (["SAMPLING RATE", "100", "SAMPLE ENDIANNESS", "big", "SAMPLE TYPE", "int12"],
             "unknown sample type 'int12'"),
    "labels": (["RATE", "100", "SAMPLE ENDIANNESS", "big", "SAMPLE TYPE", "int16"],
               "unexpected answer"),
    "long line": (["SAMPLING RATE", "1" * 300, "SAMPLE ENDIANNESS", "big", "SAMPLE TYPE",
                   "int16"], "handshake line longer than 256 bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_bad_channel_answers_are_clear_errors_and_it_reconnects(case):
    lines, message = BAD_ANSWERS[case]
    got = Collector()
    with RefDevice("RAW 2.0", {5: Chan(100, "big", "int16")}, answers={5: lines}) as dev:
        client = got.client(dev.port, [5])
        run_client(client, lambda: len(got.disconnects) >= 2)
        assert dev.connections >= 2
    assert message in got.disconnects[0], got.disconnects[0]
    assert got.sessions == []


def test_unknown_channel_closes_with_a_hint():
    got = Collector()
    with RefDevice("RAW 1.1", {1: Chan(100, "big", "int16")}) as dev:
        client = got.client(dev.port, [1, 4])
        run_client(client, lambda: len(got.disconnects) >= 3)
        # probing stops at RAW 1.1: a channel error is not a version error
        assert dev.version_lines[:3] == ["RAW 2.0", "RAW 1.1", "RAW 1.1"]
    assert got.disconnects[1] == ("device closed the connection after CHANNEL 4 "
                                  "(unknown channel id?)")



def _raw_header(version, cid, count, when=T0):
    return Packet(cid, when, [], count=count).encode(version, Chan(1, "big", "int8"))


@pytest.mark.parametrize("version", ["RAW 1.0", "RAW 2.0"])
@pytest.mark.parametrize("case", ["too many samples", "truncated", "unrequested channel"])
def test_broken_streams_end_the_session_with_a_clear_error(version, case):
    chans = {1: Chan(100, "big", "int16"), 2: Chan(100, "big", "int16")}
    good = packet(1, T0, [1, 2, 3])
    if case == "too many samples":
        bad = Packet(1, raw=_raw_header(version, 1, 1_000_001))
        message = "packet of 1000001 samples (limit 1000000)"
    elif case == "truncated":
        bad = Packet(1, raw=_raw_header(version, 1, 10) + b"\x00\x01" * 4)
        message = "in the middle of a packet"
    else:
        bad = Packet(1, raw=_raw_header(version, 2, 1) + b"\x00\x01")
        message = "packet for channel 2, which was not negotiated"
    got = Collector()
    # a gap, so the good packet arrives in a read of its own (PacketSplitter
    # drops the complete packets of a read that ends in an error)
    with RefDevice(version, chans, [good, bad], after="close", gap=0.05) as dev:
        client = got.client(dev.port, [1], version=version)
        run_client(client, lambda: len(got.disconnects) >= 2)
        assert dev.started >= 2
    assert message in got.disconnects[0], got.disconnects
    # the good packet before it came through, every session
    assert len(got.packets) >= 2 and got.packets[0][3].tolist() == [1, 2, 3]


def test_a_failing_packet_handler_ends_the_session_but_not_the_client():
    calls, reasons = [], []

    def on_packet(spec, us, quality, samples):
        calls.append(us)
        raise RuntimeError("boom")

    with RefDevice("RAW 2.0", {1: Chan(100, "big", "int16")}, [packet(1, T0, [1])]) as dev:
        client = RawClient("127.0.0.1", dev.port, [1], on_packet=on_packet,
                           on_disconnect=reasons.append, reconnect_delay=0.01,
                           reconnect_max=0.02)
        run_client(client, lambda: len(calls) >= 2)
        assert dev.started >= 2
    assert reasons[0] == "packet handler failed: RuntimeError('boom')"


def test_idle_timeout_drops_and_reconnects():
    got = Collector()
    with RefDevice("RAW 2.0", {1: Chan(100, "big", "int16")}, [packet(1, T0, [7])]) as dev:
        client = got.client(dev.port, [1], idle_timeout=0.15)
        run_client(client, lambda: dev.started >= 3)
    assert "no data for 0.15 s (idle timeout)" in got.disconnects[0]
    assert len(got.sessions) >= 3


def test_no_idle_timeout_keeps_a_silent_link():
    got = Collector()
    with RefDevice("RAW 2.0", {1: Chan(100, "big", "int16")}) as dev:
        client = got.client(dev.port, [1])
        run_client(client, lambda: False, timeout=0.6)
        assert dev.connections == 1 and dev.started == 1
    assert got.disconnects == ["stopped"]


def _delays(caplog):
    return [float(m.group(1)) for m in (re.search(r"reconnecting in ([0-9.e-]+) s", r.message)
                                        for r in caplog.records) if m]


def test_back_off_doubles_up_to_the_maximum(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]       # bound, not listening: refused
        got = Collector()
        client = got.client(port, [1], reconnect_delay=0.01, reconnect_max=0.04)
        with caplog.at_level(logging.WARNING, logger="seedlink_fast.raw.client"):
            run_client(client, lambda: len(got.disconnects) >= 6)
    assert _delays(caplog)[:6] == [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]
    assert "cannot connect" in got.disconnects[0]


def test_back_off_resets_after_a_session_with_data(caplog):
    got = Collector()
    with RefDevice("RAW 1.1", {1: Chan(100, "big", "int16")}, [packet(1, T0, [1])],
                   after="close") as dev:
        client = got.client(dev.port, [1], version="1.1", reconnect_delay=0.01,
                            reconnect_max=1.0)
        with caplog.at_level(logging.WARNING, logger="seedlink_fast.raw.client"):
            run_client(client, lambda: len(got.packets) >= 4)
    assert set(_delays(caplog)) == {0.01}
    assert all(r == "connection closed by the device" for r in got.disconnects[:3])


def test_stop_interrupts_a_hanging_handshake_and_timeout_is_reported():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)              # never accepts, never answers
        got = Collector()
        client = got.client(listener.getsockname()[1], [1], version="2.0")
        client.handshake_timeout = 0.1
        run_client(client, lambda: len(got.disconnects) >= 2)
        assert "handshake (RAW 2.0) timed out after 0.1 s" in got.disconnects[0]
        client = got.client(listener.getsockname()[1], [1])
        assert run_client(client, lambda: False, timeout=0.2) < 1.0


def test_constructor_rejects_what_cannot_work():
    with pytest.raises(ValueError):
        RawClient("127.0.0.1", 1, [])
    with pytest.raises(ValueError):
        RawClient("127.0.0.1", 1, [1], version="3.0")
    with pytest.raises(ValueError):
        RawClient("127.0.0.1", 1, [70000], version="2.0")
    # auto with a 32-bit id skips RAW 2.0
    client = RawClient("127.0.0.1", 1, [70000])
    assert client._versions == ["RAW 1.1", "RAW 1.0"]
    assert RawClient("127.0.0.1", 1, [1], version="raw 1.0")._versions == ["RAW 1.0"]

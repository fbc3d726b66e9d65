"""``seedlink-fast raw-plugin`` against the reference RAW device: records
decode with libmseed (pymseed) to exactly the samples and times fed, span
packets, break only at time gaps, and reach SeedLink clients through our
server.  Loopback only; every wait is bounded."""
import datetime
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rawref_device import Chan, RefDevice, packet, us_of
from seedlink_fast.plugin_stream import MSEED, iter_plugin_file
from seedlink_fast.raw.plugin_main import ChannelPacker, ENCODINGS, _convert
from seedlink_fast.raw.protocol import to_int32

pymseed = pytest.importorskip("pymseed")

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, 250000)
TYPES = ["int8", "int16", "int32", "float32", "float64"]
WIRE = {"int8": "i1", "int16": "i2", "int32": "i4", "float32": "f4", "float64": "f8"}


# -- helpers -----------------------------------------------------------------------------

def decode(records):
    """[(id, start_ns, rate, samples, timing quality, sequence number)] via libmseed."""
    out = []
    for rec in records:
        assert len(rec) == 512
        (msr,) = list(pymseed.MS3Record.from_buffer(rec, unpack_data=True))
        quality = msr.get_extra_header("/FDSN/Time/Quality") if msr.extra else None
        out.append((msr.sourceid, msr.starttime, msr.samprate,
                    np.array(msr.np_datasamples, copy=True), quality, int(rec[:6])))
    return out


def by_channel(decoded):
    chans = {}
    for item in decoded:
        chans.setdefault(item[0], []).append(item)
    return chans


def expected(values, samptype, encoding):
    """What the plugin must store for `values` of `samptype` in `encoding`."""
    wire = np.asarray(values, dtype=WIRE[samptype])
    if encoding.startswith("FLOAT"):
        return wire.astype(ENCODINGS[encoding][1])
    ints = to_int32(wire)
    if encoding == "INT16":
        return np.clip(ints, -32768, 32767)
    return ints


def signal_values(samptype, n, rng):
    if samptype == "int8":
        return rng.integers(-128, 128, n)
    if samptype == "int16":
        return rng.integers(-32768, 32768, n)
    if samptype == "int32":
        # a walk: Steim2 differences stay within 30 bits
        return np.clip(np.cumsum(rng.integers(-2 ** 20, 2 ** 20, n)), -2 ** 28, 2 ** 28)
    return rng.normal(0, 3000.0, n)


def check_channel(items, values, rate, start_us, quality=None):
    """The records of one channel hold exactly `values`, contiguous from start_us."""
    got = np.concatenate([s for _, _, _, s, _, _ in items])
    assert got.dtype == values.dtype or got.dtype.kind == values.dtype.kind == "i"
    np.testing.assert_array_equal(got, values)
    index = 0
    for _, start_ns, samprate, samples, tq, _ in items:
        assert samprate == rate
        assert start_ns == start_us * 1000 + index * 10 ** 9 // rate
        if quality is not None:
            assert tq == quality
        index += len(samples)
    seqs = [seq for *_, seq in items]
    assert seqs == list(range(1, len(items) + 1))


class PluginProc:
    """A raw-plugin subprocess writing its fd-63 stream to a file."""

    def __init__(self, tmp_path, port, chan_map, *args, name="plugin"):
        self.out = tmp_path / ("%s.fd63" % name)
        self.log = open(tmp_path / ("%s.log" % name), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seedlink_fast", "raw-plugin", "-s", "127.0.0.1",
             "-p", str(port), "-c", "XX.RAW", "-m", chan_map, "-r", "0.05",
             "--output", str(self.out), *args, "rawtest"],
            stdout=subprocess.DEVNULL, stderr=self.log)

    def records(self):
        if not self.out.exists():
            return []
        return [p.payload for p in iter_plugin_file(self.out, allow_truncated=True)
                if p.type == MSEED and p.station == "XX.RAW"]

    def wait_samples(self, total, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()
            recs = self.records()
            if sum(int.from_bytes(r[30:32], "big") for r in recs) >= total:
                return recs
            time.sleep(0.05)
        raise AssertionError("plugin wrote too few samples; log:\n" + self.log_text())

    def stop(self, timeout=10.0):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self.log.close()
        return rc

    def log_text(self):
        self.log.flush()
        return (self.out.parent / (self.out.stem + ".log")).read_text(errors="replace")


# -- the packing, in process -----------------------------------------------------------------

@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("samptype", TYPES)
@pytest.mark.parametrize("order", ["<", ">"])
def test_every_type_order_and_encoding_decodes_exactly(encoding, samptype, order):
    rng = np.random.default_rng(len(encoding) * 7 + len(samptype))
    values = signal_values(samptype, 1000, rng)
    wire = np.asarray(values, dtype=order + WIRE[samptype])
    packer = ChannelPacker("XX", "RAW", "00", "HHZ", encoding)
    packer.set_rate(250)
    records = []
    for k in range(0, 1000, 125):     # 8 packets of 0.5 s
        chunk = wire[k:k + 125]
        records += packer.add(us_of(T0) + k * 4000, 77, _convert(chunk, encoding))
    records += packer.flush()
    items = decode(records)
    assert {i[0] for i in items} == {"FDSN:XX_RAW_00_H_H_Z"}
    check_channel(items, expected(values, samptype, encoding), 250, us_of(T0), quality=77)


def _int_packets(packer, starts_us, n=50, rate=100, quality=100):
    records, values = [], []
    for k, start in enumerate(starts_us):
        chunk = (np.arange(n) % 7 - 3 + k).astype(np.int32)
        values.append(chunk)
        records += packer.add(start, quality if np.isscalar(quality) else quality[k], chunk)
    return records, np.concatenate(values)


def test_packets_do_not_flush_only_time_breaks_do():
    packer = ChannelPacker("XX", "RAW", "", "HHZ", "STEIM2")
    packer.set_rate(100)
    t0 = us_of(T0)
    # ten 0.5 s packets, stamps jittering by 4 ms (< half a 10 ms period)
    starts = [t0 + k * 500_000 + (2000 if k % 2 else -2000) for k in range(10)]
    records, values = _int_packets(packer, starts)
    assert records == []
    records = packer.flush()
    assert len(records) == 1
    check_channel(decode(records), values, 100, t0 - 2000)
    # a 6 ms jump is more than half a period: the open record closes there
    packer = ChannelPacker("XX", "RAW", "", "HHZ", "STEIM2")
    packer.set_rate(100)
    starts = [t0, t0 + 500_000, t0 + 1_006_000, t0 + 1_506_000]
    records, values = _int_packets(packer, starts)
    records += packer.flush()
    items = decode(records)
    assert [len(i[3]) for i in items] == [100, 100]
    assert items[1][1] == (t0 + 1_006_000) * 1000
    assert [i[5] for i in items] == [1, 2]


def test_timing_quality_is_the_lowest_of_the_packets_in_a_record():
    packer = ChannelPacker("XX", "RAW", "", "HHZ", "INT32")
    packer.set_rate(100)
    t0 = us_of(T0)
    # 112 samples per INT32 record: packets of 50 -> records [0,112) [112,224) [224,...)
    records, _ = _int_packets(packer, [t0 + k * 500_000 for k in range(6)],
                              quality=[90, 90, 60, 90, 90, 100])
    records += packer.flush()
    assert [q for *_, q, _ in decode(records)] == [60, 60, 90]


def test_sequence_numbers_continue_across_breaks_and_rate_changes():
    packer = ChannelPacker("XX", "RAW", "", "HHZ", "STEIM1")
    packer.set_rate(100)
    t0 = us_of(T0)
    records, _ = _int_packets(packer, [t0, t0 + 10 ** 7])
    records += packer.set_rate(200)
    records += packer.add(t0 + 2 * 10 ** 7, 100, np.arange(10, dtype=np.int32))
    records += packer.flush()
    assert [i[5] for i in decode(records)] == [1, 2, 3]
    assert [i[2] for i in decode(records)] == [100, 100, 200]


# -- the plugin process ---------------------------------------------------------------------------

def _device_for_all_types(version, rng, npackets=6, n=40, rate=100):
    types = TYPES if version != "RAW 1.0" else TYPES[:3]
    chans, values, packets = {}, {}, []
    cid = 1
    for samptype in types:
        for order in ("big", "little"):
            chans[cid] = Chan(rate, order, samptype)
            values[cid] = signal_values(samptype, npackets * n, rng)
            cid += 1
    for k in range(npackets):
        for cid in chans:
            when = T0 + datetime.timedelta(microseconds=k * n * 10 ** 6 // rate)
            packets.append(packet(cid, when, values[cid][k * n:(k + 1) * n].tolist(),
                                  quality=95))
    chan_map = ",".join("%02d.HH%s:%d" % (cid, "ZNE"[cid % 3], cid) for cid in chans) + ","
    return chans, values, packets, chan_map


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_plugin_end_to_end_every_encoding(tmp_path, encoding):
    rng = np.random.default_rng(11)
    chans, values, packets, chan_map = _device_for_all_types("RAW 2.0", rng)
    total = sum(len(v) for v in values.values())
    with RefDevice("RAW 2.0", chans, packets) as dev:
        plugin = PluginProc(tmp_path, dev.port, chan_map, "-e", encoding.lower(),
                            "--flush-idle", "0.2")
        records = plugin.wait_samples(total)
        assert plugin.stop() == 0, plugin.log_text()
    channels = by_channel(decode(records))
    for cid, chan in chans.items():
        sid = "FDSN:XX_RAW_%02d_H_H_%s" % (cid, "ZNE"[cid % 3])
        check_channel(channels[sid], expected(values[cid], chan.samptype, encoding), 100,
                      us_of(T0), quality=95)


@pytest.mark.parametrize("version", ["RAW 1.0", "RAW 1.1"])
def test_plugin_probes_old_devices(tmp_path, version):
    rng = np.random.default_rng(5)
    chans, values, packets, chan_map = _device_for_all_types(version, rng)
    total = sum(len(v) for v in values.values())
    with RefDevice(version, chans, packets) as dev:
        plugin = PluginProc(tmp_path, dev.port, chan_map, "--flush-idle", "0.2")
        records = plugin.wait_samples(total)
        assert plugin.stop() == 0, plugin.log_text()
        assert dev.version_lines[-1] == version
    channels = by_channel(decode(records))
    for cid, chan in chans.items():
        sid = "FDSN:XX_RAW_%02d_H_H_%s" % (cid, "ZNE"[cid % 3])
        check_channel(channels[sid], expected(values[cid], chan.samptype, "STEIM2"), 100,
                      us_of(T0), quality=100)


def test_ten_packets_make_one_record_flushed_at_sigterm(tmp_path):
    values = (np.arange(500) % 7 - 3).astype(np.int32)
    packets = [packet(4, T0 + datetime.timedelta(milliseconds=500 * k),
                      values[50 * k:50 * (k + 1)].tolist()) for k in range(10)]
    with RefDevice("RAW 2.0", {4: Chan(100, "little", "int32")}, packets) as dev:
        plugin = PluginProc(tmp_path, dev.port, ".BHZ:4", "--flush-idle", "0")
        assert dev.finished.wait(10), plugin.log_text()
        time.sleep(1.0)                 # the plugin reads ten small packets by then
        assert plugin.records() == []   # nothing flushed by packets
        assert plugin.stop() == 0, plugin.log_text()
    items = decode(plugin.records())
    assert len(items) == 1
    assert items[0][0] == "FDSN:XX_RAW__B_H_Z"
    check_channel(items, values, 100, us_of(T0), quality=100)


def test_idle_flush_and_reconnect_keep_numbering(tmp_path):
    """Two sessions (the device closes after each): records of both, the
    sequence numbers continue, the gap between them breaks the record."""
    first = [packet(1, T0, list(range(30)))]
    second = [packet(1, T0 + datetime.timedelta(seconds=60), list(range(30, 60)))]
    with RefDevice("RAW 2.0", {1: Chan(20, "big", "int16")}, sessions=[first, second],
                   after="close") as dev:
        plugin = PluginProc(tmp_path, dev.port, "00.EHZ:1", "-e", "INT16",
                            "--flush-idle", "5")
        records = plugin.wait_samples(60)
        assert plugin.stop() == 0
        assert dev.started >= 2
    items = decode(records)
    assert [len(i[3]) for i in items[:2]] == [30, 30]
    assert [i[5] for i in items[:2]] == [1, 2]
    assert items[1][1] == (us_of(T0) + 60 * 10 ** 6) * 1000


def test_plugin_rejects_bad_command_lines(tmp_path):
    base = [sys.executable, "-m", "seedlink_fast", "raw-plugin", "-s", "127.0.0.1",
            "-p", "1", "--output", str(tmp_path / "x")]
    for args, message in ((["-c", "XX.RAW", "-m", "HHZ:1"], "need LOC.CHA:ID"),
                          (["-c", "XX.RAW", "-m", "00.HHZ"], "bad channel map item"),
                          (["-c", "XXRAW", "-m", "00.HHZ:1"], "-c must be NET.STA"),
                          (["-c", "XX.RAW", "-m", "00.HHZ:1", "-e", "ascii"],
                           "unknown encoding")):
        res = subprocess.run(base + args, capture_output=True, text=True, timeout=30)
        assert res.returncode == 2 and message in res.stderr, res.stderr


# -- under the real server ------------------------------------------------------------

def test_raw_plugin_under_our_server(tmp_path, start_server):
    from loadgen import make_ini
    from serverproc import free_port

    rng = np.random.default_rng(3)
    values = {1: rng.integers(-2000, 2000, 800), 2: rng.normal(0, 100, 800)}
    chans = {1: Chan(200, "big", "int16"), 2: Chan(200, "little", "float32")}
    packets = [packet(cid, T0 + datetime.timedelta(milliseconds=250 * k),
                      values[cid][50 * k:50 * (k + 1)].tolist())
               for k in range(16) for cid in chans]
    with RefDevice("RAW 1.1", chans, packets) as dev:
        port = free_port()
        cmd = ("%s -m seedlink_fast raw-plugin -s 127.0.0.1 -p %d -c XX.RAW "
               "-m 10.HHZ:1,10.HHN:2, -r 0.05 --flush-idle 0.3" % (sys.executable, dev.port))
        ini = make_ini(tmp_path, port, plugins=[("raw", cmd, "timeout = 0 start_retry = 1")],
                       stations=[("XX.RAW", "")])
        srv = start_server(ini, port)
        deadline = time.monotonic() + 20
        data = b""
        while time.monotonic() < deadline:
            with srv.client() as c:
                assert c.command("STATION RAW XX") == "OK"
                assert c.command("FETCH 000000") == "OK"
                c.send("END")
                data = c.read_packets_until_end()
            records = [data[i + 8:i + 520] for i in range(0, len(data), 520)]
            if sum(int.from_bytes(r[30:32], "big") for r in records) >= 1600:
                break
            time.sleep(0.2)
    channels = by_channel(decode(records))
    check_channel(channels["FDSN:XX_RAW_10_H_H_Z"], values[1].astype(np.int32), 200,
                  us_of(T0), quality=100)
    check_channel(channels["FDSN:XX_RAW_10_H_H_N"], np.rint(values[2].astype(np.float32))
                  .astype(np.int32), 200, us_of(T0), quality=100)
    assert os.path.exists(srv.log_path)

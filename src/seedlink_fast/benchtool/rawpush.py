"""Feeding our raw ingest port (docs/raw-push.md).

Latency probes use :class:`RawPush`, a bare RAW 2.0 PUSH device that writes
each packet from the caller's thread, so the send time it records is the
moment the samples leave for the server (the Streamer would add a hand-over
to its network thread).  Ingest runs use the real device code, the push
:class:`~seedlink_fast.raw.Streamer`, in a child process.

How a probe becomes exactly one record at once: a pass-through channel
packs the samples into Steim2 records and closes a record when it is full.
A probe is one packet of PROBE_SAMPLES samples whose differences all need
30 bits, one per Steim2 word: that is exactly the 103 words of a 512-byte
record.  So the record is complete, and sent to clients, the moment its
last sample arrives, and "entering the server -> receipt" is measured
without waiting for an idle flush.  The probe's first sample is its tag;
clients read it from the record (Steim2 X0) without decoding.  The probes'
times are contiguous (sample rate = PROBE_SAMPLES x probes per second), so
the server sees one continuous stream, not a gap per probe.
"""
import datetime
import socket
import time

import numpy as np

from ..raw.protocol import PUSH_VERSION, pack_header
from .feeder import pace

PROBE_SAMPLES = 103                 # 30-bit differences: 103 words = one 512-byte record
_SWING = (1 << 28) - 1              # +-_SWING alternating: every difference needs 30 bits
US = 1_000_000


class RawPushError(RuntimeError):
    pass


class RawPush:
    """A minimal push device: handshake, then packets written by the caller.

    ``channels``: {id: rate in Hz}; all int32, big-endian.  After
    construction ``resume`` holds, per channel, the server's last stored
    sample time (µs) or None.  ``start=False`` stops after the channel
    lines (to ask for the resume times only)."""

    def __init__(self, addr, station, channels, timeout=10.0, start=True):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self.resume = {}
        try:
            self._ask(PUSH_VERSION, PUSH_VERSION)
            self._ask("STATION %s" % station, "OK")
            for cid, rate in channels.items():
                reply = self._ask("CHANNEL %d %d big int32" % (cid, rate), "OK")
                word = reply.split()[1] if len(reply.split()) > 1 else "-"
                self.resume[cid] = None if word == "-" else int(word)
            if start:
                self._ask("START", "STARTING")
        except BaseException:
            self.sock.close()
            raise

    def _ask(self, line, expect):
        self.sock.sendall(line.encode() + b"\n")
        while b"\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RawPushError("%s: connection closed" % line)
            self._buf += chunk
        reply, _, self._buf = self._buf.partition(b"\n")
        reply = reply.decode("ascii", "replace").strip()
        if reply.split()[:1] != expect.split()[:1]:
            raise RawPushError("%s: server said %r" % (line, reply))
        return reply

    def close(self):
        self.sock.close()


def resume_times(addr, station, channels, timeout=10.0):
    """{id: last stored sample (µs) or None}: the handshake without START."""
    push = RawPush(addr, station, channels, timeout=timeout, start=False)
    push.close()
    return push.resume


def probe_samples(tag):
    """The samples of one probe: the tag, then values whose differences all need 30 bits."""
    x = np.empty(PROBE_SAMPLES, dtype=">i4")
    x[1::2] = _SWING
    x[2::2] = -_SWING
    x[0] = tag
    return x


def send_probes(addr, station, cid, count, rate, tag0, timeout=10.0, ready=None):
    """Push `count` probes at `rate` per second; returns {tag: send ns} (CLOCK_MONOTONIC)."""
    sample_rate = int(round(PROBE_SAMPLES * rate))
    push = RawPush(addr, station, {cid: sample_rate}, timeout=timeout)
    try:
        last = push.resume.get(cid)
        now_us = time.time_ns() // 1000
        start_us = now_us if last is None else max(now_us, last + US)
        step_us = PROBE_SAMPLES * US / sample_rate
        probes = [(tag0 + i, probe_samples(tag0 + i)) for i in range(count)]
        sent = {}
        t0 = time.monotonic() + 0.02
        for i, (tag, samples) in enumerate(probes):
            pace(t0 + i / rate)
            packet = pack_header("RAW 2.0", start_us + int(i * step_us), 100, cid,
                                 PROBE_SAMPLES) + samples.tobytes()
            sent[tag] = time.monotonic_ns()
            push.sock.sendall(packet)
        return sent
    finally:
        push.close()


def probe_tag(record):
    """The tag of a probe record: its first sample (Steim2 X0: the second
    word of the first data frame)."""
    offset = int.from_bytes(record[44:46], "big") or 64
    return int.from_bytes(record[offset + 4:offset + 8], "big", signed=True)


def _wait_acked(streamer, last_us, timeout):
    """True once every channel is acknowledged up to `last_us` (polled), False after `timeout`."""
    deadline = time.monotonic() + timeout
    while not all(ch["acked_us"] == last_us for ch in streamer.stats()["channels"].values()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def stream_device(addr, station, nchan, sample_rate, seconds, speed, packet_ms, timeout):
    """Push `seconds` of data on channels 1..nchan with the Streamer and
    wait until all of it is acknowledged (stored).  speed: 0 = as fast as
    possible, else that many times real time.  Returns a dict of figures
    (times CLOCK_MONOTONIC ns)."""
    from ..raw import Channel, Streamer

    channels = {k + 1: sample_rate for k in range(nchan)}
    resume = resume_times(addr, station, channels, timeout)
    now_us = time.time_ns() // 1000
    start_us = max([now_us] + [r + US for r in resume.values() if r is not None])
    start_us -= start_us % US
    packet = max(1, sample_rate * packet_ms // 1000)
    rng = np.random.default_rng(3)
    block = np.cumsum(rng.integers(-60, 61, sample_rate)).astype(np.int32)
    streamer = Streamer([Channel(cid, sample_rate, "little", "int32") for cid in channels],
                        addr[0], addr[1], mode="push", station=station,
                        buffer_bytes=1 << 30, flush_timeout=30.0).start()
    epoch = datetime.datetime(1970, 1, 1)
    fed = 0
    t_start = time.monotonic_ns()
    try:
        # packet k of the run starts at sample k * packet of its second
        starts = [(second, i) for second in range(seconds) for i in range(0, sample_rate, packet)]
        for second, i in starts:
            if speed > 0:
                pace(t_start / 1e9 + (second + i / sample_rate) / speed)
            when = epoch + datetime.timedelta(
                microseconds=start_us + second * US + i * US // sample_rate)
            chunk = block[i:i + packet]
            for cid in channels:
                streamer.feed_data(cid, when, 100, chunk)
            fed += len(chunk) * nchan
        t_fed = time.monotonic_ns()
        acked = _wait_acked(streamer, start_us + ((seconds * sample_rate - 1) * US) // sample_rate,
                            timeout)
        t_acked = time.monotonic_ns()
        stats = streamer.stats()
    finally:
        streamer.stop()
    return {"samples": fed, "t_start_ns": t_start, "t_fed_ns": t_fed, "t_acked_ns": t_acked,
            "acked": acked, "overflow_packets": stats["overflow_packets"],
            "last_error": stats.get("last_error")}

"""Plugin-side API: send data to a SeedLink server through file descriptor 63.

A Python counterpart of SeisComP's C plugin library (``libs/plugin/plugin.c``,
interface version 3) with the same functions and the same bytes on the wire::

    from seedlink_fast import plugin
    plugin.send_raw3("GE.APE", "Z", (2024, 60, 12, 0, 0, 0), 0, 100, samples)
    plugin.send_log3("GE.APE", (2024, 60, 12, 0, 0, 0), "gps %s", "locked")

The module-level functions write to fd 63 (the server starts plugins with the
pipe there); :class:`PluginWriter` can target any fd or binary file object.

Behaviour shared with the C library:

* Station and channel names are copied like ``strncpy`` into 10-byte fields:
  longer names are **silently truncated** to 10 bytes and a 10-byte name has
  no terminating NUL (the server still reads it correctly).  str names are
  encoded as Latin-1.
* Writes block until the whole packet is written (a full pipe blocks the
  plugin, exactly like the C ``writen`` loop).

Differences, all on misuse: invalid arguments raise ValueError/TypeError
instead of returning -1, and write errors raise OSError (e.g.
BrokenPipeError when the server has gone) instead of returning -1.  Each
packet is written with a single ``write`` where possible (header and payload
together are at most 4060 bytes, below PIPE_BUF, so one packet is atomic on a
pipe even with several writers); the C library uses two writes per packet.
"""

import datetime
import os
import select
import threading
import time

import numpy as np

from .plugin_stream import (
    LOG, MSEED, PLUGIN_MAX_MSG_SIZE, PLUGIN_MAX_SAMPLES, PLUGIN_MSEED_SIZE,
    RAW_DATA, RAW_DATA_FLUSH, RAW_DATA_GAP, RAW_DATA_TIME, encode_header)

__all__ = [
    "PLUGIN_FD", "PLUGIN_INTERFACE_VERSION", "PluginWriter", "to_ptime",
    "send_raw3", "send_raw_depoch", "send_flush3", "send_mseed", "send_mseed2",
    "send_log3",
]

PLUGIN_INTERFACE_VERSION = 3
PLUGIN_FD = 63

_SAMPLE_DTYPE = np.dtype("=i4")
_INT32_MIN, _INT32_MAX = -2 ** 31, 2 ** 31 - 1


def to_ptime(value):
    """Return ``(year, yday, hour, minute, second, usec)`` for a ptime-like value.

    Accepts a 6-sequence of ints (passed through unchanged, so a leap second
    ``second=60`` can be expressed) or a :class:`datetime.datetime` (naive
    means UTC; aware ones are converted to UTC).
    """
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc)
        return (value.year, value.timetuple().tm_yday, value.hour, value.minute,
                value.second, value.microsecond)
    fields = tuple(int(v) for v in value)
    if len(fields) != 6:
        raise ValueError("ptime needs 6 fields (year, yday, hour, minute, "
                         "second, usec), got %d" % len(fields))
    return fields


def _as_samples(data):
    """Return `data` as a contiguous native int32 array, refusing lossy conversions."""
    arr = np.asarray(data)
    if arr.dtype == _SAMPLE_DTYPE:
        return np.ascontiguousarray(arr).reshape(-1)
    if arr.dtype.kind not in "iub":
        if arr.size == 0:
            return np.empty(0, _SAMPLE_DTYPE)
        raise TypeError("samples must be integers, got dtype %s" % arr.dtype)
    if arr.size and (arr.min() < _INT32_MIN or arr.max() > _INT32_MAX):
        raise ValueError("sample value out of int32 range")
    return np.ascontiguousarray(arr, dtype=_SAMPLE_DTYPE).reshape(-1)


class PluginWriter:
    """Writes plugin packets to a file descriptor or a binary file object.

    Args:
        target: an int file descriptor (default 63) or an object with a
            ``write`` method (a pipe/file opened ``"wb"``, ``io.BytesIO``...).
            The writer never closes it.

    All ``send_*`` methods take the C library's arguments and return what it
    returns (bytes of payload sent, or 0).  A lock keeps the packets of one
    call together when several threads share a writer.
    """

    def __init__(self, target=PLUGIN_FD):
        self._lock = threading.Lock()
        if isinstance(target, int):
            self._fd = target
            self._file = None
        elif hasattr(target, "write"):
            self._fd = None
            self._file = target
        else:
            raise TypeError("target must be a file descriptor or a binary file object")

    # -- low level ------------------------------------------------------------

    def _write_all(self, data):
        """Write every byte, blocking like C ``writen`` (waits if the fd is non-blocking)."""
        view = memoryview(data)
        while view:
            try:
                if self._fd is not None:
                    n = os.write(self._fd, view)
                else:
                    n = self._file.write(view)
            except BlockingIOError as exc:
                # Non-blocking target with a full buffer (a buffered file may
                # have taken part of the data): wait until writable.
                view = view[getattr(exc, "characters_written", 0):]
                n = None
            if n is None:
                select.select([], [self._fileno()], [])
                continue
            view = view[n:]

    def _fileno(self):
        return self._fd if self._fd is not None else self._file.fileno()

    def _send(self, head, payload=b""):
        # One write per packet: at most 4060 bytes, atomic on a pipe.
        self._write_all(head + payload if payload else head)

    def _done(self):
        if self._file is not None and hasattr(self._file, "flush"):
            self._file.flush()

    # -- the C library's API ------------------------------------------------------

    def send_raw3(self, station, channel, ptime, usec_correction, timing_quality,
                  data, n=None):
        """Send int32 samples of one channel (types 8/9), a gap (10) or a time mark.

        Args:
            station: station key (e.g. ``"GE.APE"``), at most 10 bytes used.
            channel: input name as in streams.xml, at most 10 bytes used.
            ptime: time of the first sample as a (year, yday, hour, minute,
                second, usec) tuple or a datetime, or None to continue the
                previous packet of this channel.
            usec_correction: time correction in microseconds.
            timing_quality: 0..100, or -1 for none.
            data: integer samples (any array-like), or None for a gap.
            n: number of samples (default ``len(data)``); for a gap the number
                of missing samples.

        Cases, as in C:
            * ``n == 0`` and a time: one type-8 packet with no samples (only
              sets the time), even when `data` is None;
            * ``data is None``: one type-10 gap packet, ``data_size = n``,
              correction and quality copied, time zeroed;
            * otherwise chunks of at most 1000 samples: the first is type 8
              with time/correction/quality when `ptime` is given, every other
              chunk type 9 with those fields zeroed.

        Returns:
            ``4 * n`` for samples sent, 0 for a time mark, a gap or ``n == 0``.
        """
        pt = to_ptime(ptime) if ptime is not None else None
        if n is not None:
            n = int(n)
        with self._lock:
            if n == 0 and pt is not None:
                self._send(encode_header(RAW_DATA_TIME, station, channel, pt,
                                         usec_correction, timing_quality, 0))
                self._done()
                return 0
            if data is None:
                if n is None or n < 0:
                    raise ValueError("a gap needs the number of missing samples n >= 0")
                self._send(encode_header(RAW_DATA_GAP, station, channel, None,
                                         usec_correction, timing_quality, n))
                self._done()
                return 0
            samples = _as_samples(data)
            if n is None:
                n = len(samples)
            elif n < 0 or n > len(samples):
                raise ValueError("n=%d but %d samples given" % (n, len(samples)))
            for start in range(0, n, PLUGIN_MAX_SAMPLES):
                chunk = samples[start:min(start + PLUGIN_MAX_SAMPLES, n)]
                if start == 0 and pt is not None:
                    head = encode_header(RAW_DATA_TIME, station, channel, pt,
                                         usec_correction, timing_quality, len(chunk))
                else:
                    head = encode_header(RAW_DATA, station, channel, None, 0, 0,
                                         len(chunk))
                self._send(head, chunk.tobytes())
            self._done()
            return 4 * n

    def send_raw_depoch(self, station, channel, epoch, usec_correction,
                        timing_quality, data, n=None):
        """Like :meth:`send_raw3` with the time as float seconds since 1970.

        Same arithmetic as C: the integer part (truncated toward zero) goes
        through ``gmtime``, and ``usec = trunc((epoch - int_part) * 1e6)``
        in double precision, so e.g. ``...0.1234567`` gives 123456 and a
        value stored as ``...0.12345599`` gives 123455 (no rounding).  Leap
        seconds are ignored.  A negative epoch with a fraction yields a
        negative usec, as in C.
        """
        whole = int(epoch)          # (time_t) cast: truncation toward zero
        parts = time.gmtime(whole)
        usec = int((epoch - whole) * 1000000.0)
        pt = (parts.tm_year, parts.tm_yday, parts.tm_hour, parts.tm_min,
              parts.tm_sec, usec)
        return self.send_raw3(station, channel, pt, usec_correction,
                              timing_quality, data, n)

    def send_flush3(self, station, channel):
        """Ask the server to flush the encoders fed by this channel (type 11). Returns 0."""
        with self._lock:
            self._send(encode_header(RAW_DATA_FLUSH, station, channel, None, 0, 0, 0))
            self._done()
        return 0

    def send_mseed(self, station, record):
        """Send one 512-byte miniSEED record (type 13, empty channel).

        Returns 512, or 0 without sending anything if the record is not 512 bytes.
        """
        return self.send_mseed2(station, "", 0, record)

    def send_mseed2(self, station, channel, seq, record):
        """Like :meth:`send_mseed` with a channel name and a sequence number.

        ``seq`` travels in the header's timing_quality field; the server
        ignores both it and the channel.
        """
        record = bytes(record)
        if len(record) != PLUGIN_MSEED_SIZE:
            return 0
        with self._lock:
            self._send(encode_header(MSEED, station, channel, None, 0, seq,
                                     PLUGIN_MSEED_SIZE), record)
            self._done()
        return PLUGIN_MSEED_SIZE

    def send_log3(self, station, ptime, fmt, *args):
        """Send one log message (type 12) time-stamped with `ptime`.

        ``fmt % args`` (printf-style; `fmt` used as-is without args; str is
        encoded as UTF-8, bytes are used as they are) is clipped like the C
        library's 448-byte buffer to 445 bytes, trailing CR/LF are removed and
        CR LF appended.  Returns the payload length (at most 447), or 0
        without sending anything when `ptime` is None.
        """
        if ptime is None:
            return 0
        pt = to_ptime(ptime)
        text = fmt % args if args else fmt
        if isinstance(text, str):
            text = text.encode("utf-8")
        text = bytes(text[:PLUGIN_MAX_MSG_SIZE - 3]).rstrip(b"\r\n") + b"\r\n"
        with self._lock:
            self._send(encode_header(LOG, station, "", pt, 0, 0, len(text)), text)
            self._done()
        return len(text)


# -- module-level functions on fd 63, like the C library ----------------------

_default_writer = None
_default_lock = threading.Lock()


def _writer():
    # Created on first use so that importing this module never touches fd 63.
    global _default_writer
    if _default_writer is None:
        with _default_lock:
            if _default_writer is None:
                _default_writer = PluginWriter(PLUGIN_FD)
    return _default_writer


def send_raw3(station, channel, ptime, usec_correction, timing_quality, data, n=None):
    """:meth:`PluginWriter.send_raw3` on fd 63."""
    return _writer().send_raw3(station, channel, ptime, usec_correction,
                               timing_quality, data, n)


def send_raw_depoch(station, channel, epoch, usec_correction, timing_quality,
                    data, n=None):
    """:meth:`PluginWriter.send_raw_depoch` on fd 63."""
    return _writer().send_raw_depoch(station, channel, epoch, usec_correction,
                                     timing_quality, data, n)


def send_flush3(station, channel):
    """:meth:`PluginWriter.send_flush3` on fd 63."""
    return _writer().send_flush3(station, channel)


def send_mseed(station, record):
    """:meth:`PluginWriter.send_mseed` on fd 63."""
    return _writer().send_mseed(station, record)


def send_mseed2(station, channel, seq, record):
    """:meth:`PluginWriter.send_mseed2` on fd 63."""
    return _writer().send_mseed2(station, channel, seq, record)


def send_log3(station, ptime, fmt, *args):
    """:meth:`PluginWriter.send_log3` on fd 63."""
    return _writer().send_log3(station, ptime, fmt, *args)

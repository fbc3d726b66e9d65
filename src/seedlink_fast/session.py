"""One SeedLink 3 client connection: command parsing, per-station
sub-sessions, and the packet pump.

Behaviour follows SeisComP's seedlink (docs/seedlink-reference.md §2), with
these deliberate differences:

* pipelined commands are all answered, in order (SeisComP keeps a single
  reply slot and silently drops replies and data);
* SeedLink 3.1 extensions as ringserver has them: CAPABILITIES (with
  EXTREPLY error text), ``?``/``*`` wildcards in STATION;
* idle and incomplete-command timeouts and a cap on consecutive bad
  commands (SeisComP has none), see ``SessionLimits``.
"""
import asyncio
import logging
import struct
import time

from .buffer import SEQ_MOD, year_start_days
from .info import CAPABILITIES_31, SOFTWARE
from .mseed import sample_rate_from_factors
from . import websocket
from .selectors import SelectorSet, station_pattern_matches

log = logging.getLogger("seedlink_fast.session")

MAX_LINE = 1023                 # longer command lines close the connection
OK = b"OK\r\n"
ERROR = b"ERROR\r\n"
END = b"END"
BATCH_PACKETS = 256            # packets per transport write when a client is behind
LINES_PER_TURN = 64            # commands handled per client per loop turn

_BTIME = struct.Struct(">HHBBBxH")


class SessionLimits:
    """Hardening knobs (not in SeisComP).  0 disables a limit.

    idle_timeout: seconds a client may stay connected without sending a
        command while it receives nothing (handshaking, or streaming
        nothing); streaming clients are never cut.
    line_timeout: seconds an incomplete command line may stay incomplete
        (slow-loris protection).
    max_bad_commands: consecutive invalid commands before disconnecting.
    """

    def __init__(self, idle_timeout=0, line_timeout=60, max_bad_commands=100):
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self.max_bad_commands = max_bad_commands


def record_times_us(record):
    """(start, end) of a record in us from its header (blockette 1001 not
    applied, as SeisComP's window filter does), or None when unparseable."""
    try:
        year, doy, hh, mm, ss, frac = _BTIME.unpack_from(record, 20)
        nsamp, fact, mult = struct.unpack_from(">Hhh", record, 30)
    except struct.error:
        return None
    if not (1900 <= year <= 2500 and 1 <= doy <= 366):
        return None
    start = (((year_start_days(year) + doy - 1) * 24 + hh) * 60 + mm) * 60 * 10**6 \
        + ss * 10**6 + frac * 100
    rate = sample_rate_from_factors(fact, mult)
    end = start + (int(nsamp * 10**6 / rate) if rate > 0 else 0)
    return start, end


def parse_seedlink_time(text):
    """``Y,M,D,h,m,s`` as SeisComP accepts it -> us since the epoch, or None."""
    import calendar

    parts = text.split(",")
    if len(parts) != 6:
        return None
    try:
        y, mo, d, h, mi, s = (int(p) for p in parts)
    except ValueError:
        return None
    if not (1900 <= y <= 2099 and 1 <= mo <= 12 and 1 <= d <= 31 and 0 <= h <= 23
            and 0 <= mi <= 59 and 0 <= s <= 61):
        return None
    try:
        return calendar.timegm((y, mo, d, h, mi, s)) * 10**6
    except (ValueError, OverflowError):
        return None


def _line_break(buf):
    """Index of the first CR or LF in buf, -1 if none."""
    cr = buf.find(b"\r")
    lf = buf.find(b"\n")
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)


class SubSession:
    """A connection's state for one station."""

    def __init__(self, station):
        self.station = station
        self.selectors = SelectorSet()
        self.reset()
        self.txcount = 0
        self.sequence_gaps = 0

    def reset(self):
        """SELECT and a new STATION deactivate and clear the start point."""
        self.active = False
        self.realtime = True
        self.cursor = None          # next buffer position to read
        self.begin_seq = None
        self.begin_seq_valid = True
        self.window_begin = None    # us
        self.window_end = None
        self.end_of_data = False
        self.match_cache = {}       # stream key -> selector decision
        self.wait_new = False       # FETCH without a start: wait for a new record first
        self.open_streams = set()   # streams seen in a window that have not ended
        self.closed_streams = set()

    @property
    def plain(self):
        """No selectors and no time window: every deliverable record goes."""
        return not self.selectors and self.window_begin is None and self.window_end is None

    def accepts(self, key, record):
        """Whether to send a stored record whose stream key is `key`
        (None: never delivered)."""
        if key is None:
            return False
        match = self.match_cache.get(key)
        if match is None:
            match = self.match_cache[key] = self.selectors.matches(*key)
        if not match:
            return False
        if self.window_begin is None and self.window_end is None:
            return True
        times = record_times_us(record)
        if times is None:
            return False
        start, end = times
        if self.window_begin is not None and end < self.window_begin:
            return False
        if self.window_end is not None:
            if start > self.window_end:
                self.closed_streams.add(key)
                self.open_streams.discard(key)
                if not self.open_streams:
                    self.end_of_data = True
                return False
            self.open_streams.add(key)
        return True


class SeedLinkProtocol(asyncio.Protocol):
    """asyncio protocol for one client."""

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.peer = ("?", 0)
        self.buf = bytearray()
        self.subs = {}              # station key -> SubSession
        self.current = None         # SubSession of the last STATION (or the default)
        self.station_failed = False
        self.multi = False
        self.streaming = False
        self.batch = False
        self.extreply = False
        self.paused = False
        self.reading_paused = False
        self.ws = None                  # None, "handshake" or "open"
        self.ws_handshake = None
        self.commands_seen = 0
        self.after_cr = False
        self.closed = False
        self.pump_scheduled = False
        self.bad_commands = 0
        self.ctime_us = int(time.time() * 1e6)
        self.last_activity = time.monotonic()
        self.partial_since = None
        self.trusted = False
        self.info_level = 0
        self.window_ok = False
        self._rr = 0
        self.end_sent = False

    # -- connection lifecycle ----------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.peer = transport.get_extra_info("peername") or ("?", 0)
        if not self.server.admit(self):
            transport.abort()
            self.closed = True
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=1 << 20, low=1 << 18)
        who = self.server.client_class(self.peer[0])
        self.trusted, self.info_level = who.trusted, who.info_level
        self.window_ok, self.websocket_ok = who.window_extraction, who.websocket
        default = self.server.default_station()
        if default is not None:
            self.current = self._sub(default)

    def connection_lost(self, exc):
        self.closed = True
        for sub in self.subs.values():
            sub.station.waiters.discard(self)
        self.server.forget(self)

    def pause_writing(self):
        # back-pressure both ways: a client that does not read its replies
        # cannot make us buffer more of them
        self.paused = True
        if not self.closed and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_writing(self):
        self.paused = False
        self._resume_lines()
        self.wake()

    def _sub(self, station):
        sub = self.subs.get(station.key)
        if sub is None:
            sub = self.subs[station.key] = SubSession(station)
        return sub

    def _write(self, data):
        """One message: a reply, END, a CAT chunk (one WebSocket frame)."""
        if not self.closed:
            self.transport.write(websocket.frame(data) if self.ws == "open" else data)

    def _write_packets(self, data):
        """Concatenated 520-byte packets (one WebSocket frame each)."""
        if self.closed:
            return
        if self.ws == "open":
            view = memoryview(data)
            self.transport.write(b"".join(websocket.frame(view[i:i + 520])
                                          for i in range(0, len(view), 520)))
        else:
            self.transport.write(data)

    def _reply(self, ok, code="", text=""):
        if self.batch:
            return
        if ok:
            self._write(OK)
        elif self.extreply and code:
            self._write(b"ERROR\r%s %s\r\n" % (code.encode(), text.encode("ascii", "replace")))
        else:
            self._write(ERROR)

    # -- command input -------------------------------------------------------------

    def data_received(self, data):
        self.last_activity = time.monotonic()
        if self.ws == "open":
            self._websocket_data(data)
            return
        nul = data.find(b"\0")
        if nul >= 0:
            data = data[:nul]            # SeisComP: a NUL ends what it reads
        self.buf += data
        self._handle_lines()

    def _websocket_data(self, data):
        self.buf += data
        try:
            frames = websocket.parse_frames(self.buf)
        except websocket.WebSocketError as exc:
            log.info("%s:%d : websocket: %s", self.peer[0], self.peer[1], exc)
            self.transport.close()
            self.closed = True
            return
        for opcode, payload in frames:
            if self.closed:
                return
            if opcode == websocket.OP_CLOSE:
                self.transport.write(b"\x88\x00")
                self.transport.close()
                self.closed = True
            elif opcode == websocket.OP_PING:
                self.transport.write(websocket.frame(payload, websocket.OP_PONG))
            elif opcode in (websocket.OP_TEXT, websocket.OP_BINARY):
                line = payload.rstrip(b"\r\n")
                if line:
                    self.handle_line(line)

    def _handle_lines(self):
        # at most LINES_PER_TURN commands per loop turn, and none while our
        # replies are not being read, so one client cannot starve the others
        budget = LINES_PER_TURN
        while not self.closed:
            if self.paused or budget == 0:
                if not self.reading_paused:
                    self.transport.pause_reading()
                    self.reading_paused = True
                if not self.paused:
                    asyncio.get_running_loop().call_soon(self._resume_lines)
                break
            cut = _line_break(self.buf)
            # SeisComP's 1024-byte command buffer: a longer line closes the link
            if (cut < 0 and len(self.buf) > MAX_LINE) or cut > MAX_LINE:
                log.warning("%s:%d : command is too long", *self.peer[:2])
                self.transport.close()
                self.closed = True
                return
            if cut < 0:
                break
            if cut == 0 and self.buf[0] == 10 and self.after_cr:
                # the LF of a CR LF split across reads
                del self.buf[:1]
                self.after_cr = False
                continue
            line = bytes(self.buf[:cut])
            ending = self.buf[cut]
            if ending == 13 and cut + 1 < len(self.buf) and self.buf[cut + 1] == 10:
                del self.buf[:cut + 2]
                self.after_cr = False
            else:
                del self.buf[:cut + 1]
                self.after_cr = ending == 13
            if line or self.ws == "handshake":
                budget -= 1
                self.handle_line(line)
                if self.ws == "open":
                    # frames may already follow the handshake
                    rest = bytes(self.buf)
                    del self.buf[:]
                    if rest:
                        self._websocket_data(rest)
                    return
        self.partial_since = time.monotonic() if self.buf else None

    def _resume_lines(self):
        if self.closed or self.paused:
            return
        if self.reading_paused:
            self.transport.resume_reading()
            self.reading_paused = False
        self._handle_lines()

    def handle_line(self, line):
        text = line.decode("latin-1")
        tokens = [t for t in text.replace(":", " ").split(" ") if t]
        if self.ws == "handshake":
            self._handshake_line(tokens)
            return
        if not tokens:
            return
        command = tokens[0].upper()
        args = tokens[1:]
        self.commands_seen += 1
        if command == "GET" and self.commands_seen == 1 and self.websocket_ok and \
                self.ws is None:
            # a WebSocket upgrade, only as the very first line (docs §2.13)
            self.ws = "handshake"
            self.ws_handshake = websocket.Handshake()
            return
        handler = getattr(self, "cmd_" + command, None)
        if handler is None:
            self._invalid(text, "UNSUPPORTED", "unknown command")
            return
        request_line = None
        if self.server.request_log:
            prefix = ("%s : " % self.current.station.key) if self.current is not None and \
                command not in ("CAT", "INFO", "BYE", "END", "BATCH", "CAPABILITIES") else ""
            request_line = prefix + " ".join([command] + args)
        ok = handler(args)
        if request_line is not None:
            # logged after the handler: the reply does not wait for the log write
            log.info("%s:%d : %s", self.peer[0], self.peer[1], request_line)
        if ok is False:
            self.bad_commands += 1
            limit = self.server.limits.max_bad_commands
            if limit and self.bad_commands >= limit:
                log.warning("%s:%d : too many bad commands, closing", *self.peer[:2])
                self.transport.close()
                self.closed = True
        else:
            self.bad_commands = 0

    def _handshake_line(self, tokens):
        try:
            done = self.ws_handshake.line(tokens)
        except websocket.WebSocketError as exc:
            log.info("%s:%d : websocket: %s", self.peer[0], self.peer[1], exc)
            self.transport.close()
            self.closed = True
            return
        if done:
            self.transport.write(self.ws_handshake.reply())
            self.ws = "open"

    def _invalid(self, text, code, reason):
        log.info("%s:%d : invalid request: %s", self.peer[0], self.peer[1], text[:80])
        self._reply(False, code, reason)
        self.bad_commands += 1
        limit = self.server.limits.max_bad_commands
        if limit and self.bad_commands >= limit:
            self.transport.close()
            self.closed = True

    def _station_scoped(self):
        """The sub-session a station-scoped command acts on, or None (ERROR)."""
        if self.station_failed or self.current is None:
            return None
        return self.current

    # -- commands ------------------------------------------------------------------

    def cmd_HELLO(self, args):
        if args:
            self._reply(False, "ARGUMENTS", "HELLO takes no arguments")
            return False
        sub = self._station_scoped()
        if self.station_failed:
            self._reply(False, "ARGUMENTS", "the last STATION failed")
            return False
        first = SOFTWARE
        if self.server.hello_capabilities:
            first += " :: " + " ".join(CAPABILITIES_31)
            if self.websocket_ok:
                first += " WS:13"
        description = sub.station.description if sub is not None else self.server.organization
        if not self.batch:
            self._write(("%s\r\n%s\r\n" % (first, description)).encode("latin-1", "replace"))
        return True

    def cmd_CAPABILITIES(self, args):
        for cap in args:
            if cap.upper() == "EXTREPLY":
                self.extreply = True
        self._reply(True)
        return True

    def cmd_CAT(self, args):
        if args:
            self._reply(False, "ARGUMENTS", "CAT takes no arguments")
            return False
        if self.ws == "open":
            chunks = self.server.cat_chunks(self.peer[0])
            for chunk in chunks:
                self._write(chunk)
            if chunks:
                self._write(END)
        else:
            self._write(self.server.cat_response(self.peer[0]))
        return True

    def cmd_BYE(self, args):
        if args:
            self._reply(False, "ARGUMENTS", "BYE takes no arguments")
            return False
        self.transport.close()
        self.closed = True
        return True

    def cmd_STATION(self, args):
        if not 1 <= len(args) <= 2:
            self._reply(False, "ARGUMENTS", "STATION takes a station and a network")
            return False
        sta = args[0]
        net = args[1] if len(args) == 2 else self.server.network
        matches = self.server.find_stations(sta, net, self.peer[0])
        if not matches:
            log.info("%s:%d : no such station %s.%s", self.peer[0], self.peer[1], net, sta)
            self.station_failed = True
            self._reply(False, "ARGUMENTS", "no such station")
            return False
        if not self.multi:
            # the default-station sub-session is dropped at the first STATION
            self.multi = True
            self.subs.clear()
        self.station_failed = False
        for station in matches:
            self.current = self._sub(station)
        self._group = [self._sub(s) for s in matches]
        self._reply(True)
        return True

    def _targets(self):
        """Sub-sessions a station-scoped command applies to (several after a
        wildcard STATION)."""
        sub = self._station_scoped()
        if sub is None:
            return []
        group = getattr(self, "_group", None)
        if self.multi and group and sub in group:
            return group
        return [sub]

    def cmd_SELECT(self, args):
        targets = self._targets()
        if not targets or len(args) > 1:
            self._reply(False, "ARGUMENTS", "bad SELECT")
            return False
        for sub in targets:
            sub.reset()
            if not args:
                sub.selectors.clear()
        if args:
            try:
                for sub in targets:
                    sub.selectors.add(args[0])
            except ValueError as exc:
                self._reply(False, "ARGUMENTS", str(exc))
                return False
        self._reply(True)
        return True

    def _start(self, args, realtime):
        targets = self._targets()
        if not targets or len(args) > 3:
            return False, "ARGUMENTS", "bad arguments"
        window = None
        if len(args) >= 2:
            if not self.window_ok:
                return False, "UNAUTHORIZED", "window extraction not allowed"
            begin = parse_seedlink_time(args[1])
            end = parse_seedlink_time(args[2]) if len(args) == 3 else None
            if begin is None or (len(args) == 3 and (end is None or end <= begin)):
                return False, "ARGUMENTS", "bad time"
            window = (begin, end)
        seq = None
        if args:
            if args[0].upper() == "ALL":
                seq = "ALL"
            else:
                try:
                    seq = int(args[0], 16)
                except ValueError:
                    return False, "ARGUMENTS", "bad sequence number"
                if not 0 <= seq < SEQ_MOD:
                    return False, "ARGUMENTS", "bad sequence number"
        for sub in targets:
            sub.reset()
            sub.realtime = realtime
            station = sub.station
            position = self.server.start_position(station, seq, self.peer)
            if window is not None:
                sub.window_begin, sub.window_end = window
                tpos = station.position_for_time(window[0], sub)
                if tpos is None:
                    tpos = station.next_position
                sub.begin_seq_valid = (tpos == position)
                position = max(position, tpos)
            sub.cursor = position
            sub.begin_seq = position % SEQ_MOD
            sub.active = True
            sub.wait_new = seq is None and window is None
        return True, "", ""

    def _start_command(self, args, realtime):
        ok, code, text = self._start(args, realtime)
        if not ok:
            self._reply(False, code, text)
            return False
        if self.multi:
            self._reply(True)
        else:
            self._begin_streaming()
        return True

    def cmd_DATA(self, args):
        return self._start_command(args, True)

    def cmd_FETCH(self, args):
        return self._start_command(args, False)

    def cmd_TIME(self, args):
        targets = self._targets()
        if not targets or not 1 <= len(args) <= 2:
            self._reply(False, "ARGUMENTS", "bad TIME")
            return False
        if not self.window_ok:
            self._reply(False, "UNAUTHORIZED", "window extraction not allowed")
            return False
        begin = parse_seedlink_time(args[0])
        end = parse_seedlink_time(args[1]) if len(args) == 2 else None
        if begin is None or (len(args) == 2 and (end is None or end <= begin)):
            self._reply(False, "ARGUMENTS", "bad time")
            return False
        for sub in targets:
            sub.reset()
            sub.realtime = True
            station = sub.station
            position = station.position_for_time(begin, sub)
            if position is None:
                position = station.next_position
            sub.window_begin, sub.window_end = begin, end
            sub.cursor = position
            sub.begin_seq = position % SEQ_MOD
            sub.active = True
            if end is not None and not station.has_stream_reaching(end, sub):
                sub.end_of_data = True
        if self.multi:
            self._reply(True)
        else:
            self._begin_streaming()
        return True

    def cmd_END(self, args):
        self.batch = False
        if args:
            self._reply(False, "ARGUMENTS", "END takes no arguments")
            return False
        self._begin_streaming()
        return True

    def cmd_BATCH(self, args):
        if args:
            self._reply(False, "ARGUMENTS", "BATCH takes no arguments")
            return False
        self._reply(True)
        self.batch = True
        return True

    def cmd_INFO(self, args):
        if len(args) != 1:
            self._reply(False, "ARGUMENTS", "INFO takes one level")
            return False
        self._write_packets(self.server.info_response(args[0], self))
        return True

    # -- streaming -------------------------------------------------------------------

    def _begin_streaming(self):
        self.streaming = True
        self.end_sent = False
        for sub in self.subs.values():
            if sub.active:
                sub.station.waiters.add(self)
        self.wake()

    def deliver(self, key, blk):
        """New records of station `key` (a PacketBlock; None: only wake).
        A real-time sub-session waiting right at them, with nothing to
        filter, gets them written here and now; everything else is left to
        the pump."""
        sub = self.subs.get(key)
        if blk is not None and sub is not None and sub.cursor == blk.start and sub.active \
                and sub.realtime and blk.all_deliverable and not self.paused \
                and not self.closed and sub.plain and not self.server.bytespersec:
            self._write_packets(blk.data)
            sub.cursor += blk.count
            sub.txcount += blk.count
            sub.wait_new = False
        else:
            self.wake(immediate=True)

    def wake(self, immediate=False):
        """Run the pump: at once for new records (saves a loop turn of
        latency), else scheduled (when writable, or after a batch)."""
        if not self.streaming or self.pump_scheduled or self.closed:
            return
        if immediate and not self.paused:
            self._pump()
        else:
            self.pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self):
        self.pump_scheduled = False
        if self.closed or not self.streaming:
            return
        throttle = self.server.bytespersec
        if throttle:
            self._pump_throttled(throttle)
            return
        budget = 8                       # batches per turn, then yield to other clients
        while budget and not self.paused and not self.closed:
            budget -= 1
            chunks = []
            active = [s for s in self.subs.values() if s.active]
            if not active:
                break
            for sub in active:
                chunks.extend(self._collect(sub, BATCH_PACKETS // len(active) or 1))
            if chunks:
                self._write_packets(b"".join(chunks))
            if not chunks or all(not s.active or s.cursor >= s.station.next_position
                                 for s in active):
                break
        else:
            if not self.paused and not self.closed:
                self.wake()
                return
        self._check_end()

    def _pump_throttled(self, bytespersec):
        # SeisComP's bytespersec: one 520-byte packet per 520/bytespersec s
        if self.paused or self.closed:
            return
        for sub in [s for s in self.subs.values() if s.active]:
            packets = self._collect(sub, 1)
            if packets:
                self._write_packets(packets[0])
                self.pump_scheduled = True
                asyncio.get_running_loop().call_later(520.0 / bytespersec, self._pump)
                return
        self._check_end()

    def _collect(self, sub, limit):
        """Up to about `limit` packets for sub as a list of byte strings,
        advancing its cursor.  Clients without selectors or a window are
        sent whole slices of the station's shared framed blocks."""
        station = sub.station
        out = []
        sent = 0
        while sent < limit and sub.active:
            if sub.cursor < station.oldest_position:
                # lapped out of the buffer: skip ahead, as SeisComP does
                sub.sequence_gaps += 1
                sub.cursor = station.oldest_position
            if sub.cursor >= station.next_position:
                if not sub.realtime and not sub.wait_new:
                    sub.active = False       # dial-up: caught up
                    sub.end_of_data = True
                break
            blk = station.block(sub.cursor)
            if blk is None:
                # a hole on disk: continue at the next readable record
                resumed = station.buffer.resume_position(sub.cursor)
                if resumed <= sub.cursor or resumed >= station.next_position:
                    sub.cursor = max(resumed, sub.cursor)
                    break
                sub.cursor = resumed
                continue
            first = sub.cursor - blk.start
            last = min(blk.count, first + limit - sent)
            if sub.plain and blk.all_deliverable:
                out.append(memoryview(blk.data)[first * 520:last * 520])
                sent += last - first
                sub.txcount += last - first
                sub.cursor = blk.start + last
            else:
                data = blk.data
                sent += self._filter(sub, [data[i * 520:(i + 1) * 520]
                                           for i in range(first, last)],
                                     blk.keys[first:last], out)
            sub.wait_new = False
        return out

    @staticmethod
    def _filter(sub, packets, keys, out):
        """Append the packets sub accepts to out, advancing its cursor past
        every packet looked at; returns how many were appended."""
        sent = 0
        plain = sub.plain
        for packet, key in zip(packets, keys):
            sub.cursor += 1
            if (key is not None) if plain else sub.accepts(key, packet[8:]):
                out.append(packet)
                sent += 1
            if sub.end_of_data:
                sub.active = False
                break
        sub.txcount += sent
        return sent

    def _check_end(self):
        if self.end_sent or not self.streaming:
            return
        if self.subs and all(not s.active for s in self.subs.values()) and \
                any(s.end_of_data or not s.realtime for s in self.subs.values()):
            self._write(END)
            self.end_sent = True

"""SeedLink 3 client pieces for the bench tool: bounded line reads, INFO,
and the handshake plan for each ``--start`` mode."""
import re
import socket
import time

PACKET = 520          # "SL" + 6 hex digits + 512-byte record
SEQ_MOD = 1 << 24


def hostport(text, default_host="127.0.0.1"):
    host, _, port = text.strip().rpartition(":")
    return (host or default_host, int(port))


def read_lines(sock, nlines, timeout):
    """Read until `nlines` lines arrived; returns (bytes,
    'ok'|'eof'|'reset'|'timeout') ('reset': the server reset the connection).
    Extra bytes after the last line are returned too (callers in streaming
    mode keep them)."""
    buf = b""
    end = time.monotonic() + timeout
    while buf.count(b"\n") < nlines:
        left = end - time.monotonic()
        if left <= 0:
            return buf, "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return buf, "timeout"
        except ConnectionResetError:
            return buf, "reset"
        except OSError:
            return buf, "eof"
        if not chunk:
            return buf, "eof"
        buf += chunk
    return buf, "ok"


def command(sock, line, nlines=1, timeout=10.0):
    """Send one command and wait for its reply lines; raises on ERROR/timeout."""
    sock.sendall(line.encode() + b"\r\n")
    reply, how = read_lines(sock, nlines, timeout)
    if how != "ok":
        raise RuntimeError("%s: no reply (%s) %r" % (line, how, reply[:60]))
    if nlines == 1 and not reply.startswith(b"OK"):
        raise RuntimeError("%s: server said %r" % (line, reply[:80]))
    return reply


def info(addr, level="STATIONS", timeout=10.0):
    """XML text of INFO level (reassembled from SLINFO packets), or None."""
    try:
        sock = socket.create_connection(addr, timeout=timeout)
    except OSError:
        return None
    try:
        sock.sendall(("INFO %s\r\n" % level).encode())
        buf = b""
        xml = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(buf) < PACKET:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            packet, buf = buf[:PACKET], buf[PACKET:]
            if packet[:6] != b"SLINFO":
                return None
            record = packet[8:]
            nsamples = int.from_bytes(record[30:32], "big")
            offset = int.from_bytes(record[44:46], "big") or 64
            xml += record[offset:offset + nsamples]
            if packet[6:8] != b" *":
                return xml.decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    return None


def station_ranges(xml):
    """{"NET.STA": (begin_seq, end_seq)} from INFO STATIONS XML."""
    out = {}
    for m in re.finditer(r"<station\b([^>]*)>", xml or ""):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        try:
            out["%s.%s" % (attrs["network"], attrs["name"])] = (
                int(attrs["begin_seq"], 16), int(attrs["end_seq"], 16))
        except (KeyError, ValueError):
            continue
    return out


def held_records(begin, end):
    """Records between begin_seq and end_seq (end is the next sequence number)."""
    return (end - begin) % SEQ_MOD


def handshake_plan(station, select, start):
    """[(command, reply lines)] for one client in multi-station mode; the
    last command starts the transfer (FETCH for the buffered modes, so the
    server ends the transfer with END once the buffer is sent).

    start: "ALL" -> FETCH ALL (oldest record); a hex sequence number ->
    FETCH <hex> (for servers without ALL: pass begin_seq, or use "begin",
    which the caller resolves from INFO STATIONS); "next" -> DATA (real
    time, new records only)."""
    net, _, sta = station.partition(".")
    plan = [("STATION %s %s" % (sta, net), 1)]
    if select:
        for pattern in select.split(","):
            plan.append(("SELECT %s" % pattern, 1))
    if start.upper() == "ALL":
        plan.append(("FETCH ALL", 1))
    elif start.lower() == "next":
        plan.append(("DATA", 1))
    else:
        plan.append(("FETCH %06X" % (int(start, 16) % SEQ_MOD), 1))
    return plan

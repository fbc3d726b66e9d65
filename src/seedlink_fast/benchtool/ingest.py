"""``ingest``: the input rate a server sustains, with nothing lost.

One run feeds `count` records (raw: `seconds` of samples on `channels`
channels) into one station, as fast as the server takes them (rate 0) or
at a set rate, while real-time clients (``DATA``, ``END``) count every
record and check the sequence numbers.  The feeds:

plugin
    the feeder plugin writes a prepared file of type-13 packets to fd 63
    (as SeisComP's replay anchors ``cat`` one): any server that runs plugins.
raw
    the push Streamer (our raw ingest port) in a child process; the run
    ends when every sample is acknowledged, i.e. stored.
datalink
    DataLink WRITEs on one connection (ringserver), the last one acknowledged.

Figures: records/s = records / (first write -> last record received by
the clients); ``lag_s`` = last write -> last record received (what a paced
run falls behind by); ``stored`` = end_seq growth in INFO STATIONS (when
the server reports it), which must equal the records written.
"""
import os
import tempfile
import time

from . import proto
from .datalink import DataLinkWriter, frame, stream_id, write_header
from .feeder import PluginFeed, build_plugin_stream, ingest_records
from .procfs import CpuMeter
from .rawpush import stream_device
from .scenarios import ClientGroup, _ctx, sequence_figures

CACHE = os.path.join(tempfile.gettempdir(), "seedlink-fast-bench-cache")


def _end_seq(addr, station, timeout):
    rng = proto.station_ranges(proto.info(addr, "STATIONS", timeout)).get(station)
    return None if rng is None else rng[1]


def _datalink_chunks(station, count, proto_version, batch=256):
    """Prepared WRITE packets in batches [(records, bytes)]; only the very
    last one asks for a reply, which then covers all of them."""
    from ..mseed import unpack

    data = ingest_records(station, count)
    records = unpack(data, decode=False)
    net, sta = station.split(".")
    sid = stream_id(net, sta, "00", "HHZ", proto_version)
    chunks, cur = [], []
    for i, rec in enumerate(records):
        raw = data[i * 512:(i + 1) * 512]
        cur.append(frame(write_header(sid, rec.starttime_ns // 1000, rec.endtime_ns // 1000,
                                      512, ack=i == count - 1), raw))
        if len(cur) == batch or i == count - 1:
            chunks.append((len(cur), b"".join(cur)))
            cur = []
    return chunks


def _feed_datalink(addr, chunks, count, rate, timeout):
    writer = DataLinkWriter(addr, timeout=timeout)
    try:
        if not writer.can_write:
            raise RuntimeError("the DataLink server does not grant WRITE: %s" % writer.server_id)
        t0 = time.monotonic_ns()
        done = 0
        for n, chunk in chunks:
            if rate > 0:
                left = t0 / 1e9 + done / rate - time.monotonic()
                if left > 0:
                    time.sleep(left)
            writer.send_raw(chunk)
            done += n
        writer.reply()                       # the last WRITE's: all were taken
        return {"t_start_ns": t0, "t_end_ns": time.monotonic_ns(), "records": count}
    finally:
        writer.close()


def _device(queue, *args):
    try:
        queue.put(stream_device(*args))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put({"error": "%s: %s" % (type(exc).__name__, exc)})


def prepare(feed, station, count, timeout=10.0):
    """What a feed writes, built before the clock starts (cached files for plugin)."""
    kind, where = feed
    if kind == "plugin":
        os.makedirs(CACHE, exist_ok=True)
        return build_plugin_stream(os.path.join(CACHE, "ingest-%s-%d.plugin" % (station, count)),
                                   station, count)
    if kind == "datalink":
        writer = DataLinkWriter(where, timeout=timeout)
        version = writer.proto
        writer.close()
        return _datalink_chunks(station, count, version)
    return None


def feed_once(feed, station, count, rate, prepared, timeout, raw=None):
    """Run the feed; returns its figures (t_start_ns, t_end_ns, ...)."""
    kind, where = feed
    if kind == "plugin":
        plugin = PluginFeed(where)
        status = plugin.wait(plugin.order("replay", timeout=timeout, path=prepared, rate=rate),
                             timeout + (count / rate if rate else 0) + 600)
        if status.get("error"):
            raise RuntimeError("feeder: %s" % status["error"])
        return status
    if kind == "datalink":
        return _feed_datalink(where, prepared, count, rate, timeout)
    ctx = _ctx()
    queue = ctx.Queue()
    seconds = raw["seconds"]
    proc = ctx.Process(target=_device, args=(queue, where, station, raw["channels"],
                                             raw["sample_rate"], seconds, rate,
                                             raw["packet_ms"], timeout + 20 * seconds),
                       daemon=True)
    proc.start()
    try:
        res = queue.get(timeout=timeout + 40 * seconds + 60)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    if res.get("error"):
        raise RuntimeError("raw device: %s" % res["error"])
    res["t_end_ns"] = res["t_acked_ns"]
    return res


def run_ingest(addr, feed, station, count=100_000, rate=0.0, readers=1, server_pid=None,
               timeout=10.0, raw=None, duration=120.0):
    """One ingest run.  raw: {"channels", "sample_rate", "seconds",
    "packet_ms"} for the raw feed (then `count` is not used)."""
    kind = feed[0]
    out = {"feed": kind, "station": station, "rate": rate, "readers": readers}
    prepared = prepare(feed, station, count, timeout)
    end0 = _end_seq(addr, station, timeout)
    samples = 0
    if kind == "raw":
        samples = raw["channels"] * raw["sample_rate"] * raw["seconds"]
        out.update(channels=raw["channels"], sample_rate=raw["sample_rate"],
                   data_seconds=raw["seconds"], samples=samples)
    else:
        out["records"] = count
    group = ClientGroup(addr, readers, proto.handshake_plan(station, None, "next"),
                        limit=0 if kind == "raw" else count, sample_limit=samples,
                        duration=duration, idle_timeout=duration, timeout=timeout, workers=1)
    group.release()
    time.sleep(0.2)                      # the server has handled the ENDs
    cpu = CpuMeter(server_pid).start()
    fed = None
    try:
        fed = feed_once(feed, station, count, rate, prepared, timeout, raw)
    except (OSError, RuntimeError, ValueError) as exc:
        out["error"] = ["feed: %s: %s" % (type(exc).__name__, exc)]
        group.abort()
    results, errors = group.collect()
    out.update(cpu.stop())
    if errors:
        out.setdefault("error", []).extend(errors)
    if fed is None or errors:
        return out
    end1 = _end_seq(addr, station, timeout)
    conns = [c for r in results for c in r["conns"]]
    t_start = fed["t_start_ns"] / 1e9
    t_last = max([c["t_last"] for c in conns if c["t_last"]] or [t_start])
    got = min(c["records"] for c in conns)
    span = max(t_last - t_start, 1e-9)
    written = count if kind != "raw" else None
    out.update({
        "received_min": got,
        "received_max": max(c["records"] for c in conns),
        "stored": None if end0 is None or end1 is None else proto.held_records(end0, end1),
        **sequence_figures(conns),
        "seconds": round(span, 4),
        "write_seconds": round((fed["t_end_ns"] - fed["t_start_ns"]) / 1e9, 4),
        "lag_s": round(t_last - fed["t_end_ns"] / 1e9, 4),
        "records_per_s": round(got / span, 1),
    })
    if kind == "raw":
        out["samples_received_min"] = min(c["samples"] for c in conns)
        out["lost"] = samples - out["samples_received_min"]
        out["samples_per_s"] = round(samples / span, 1)
        out["acked"] = fed["acked"]
        out["overflow_packets"] = fed["overflow_packets"]
    else:
        out["lost"] = written - got
    out["complete_readers"] = sum(
        1 for c in conns if not c["error"] and c["gaps"] == 0 and c["repeats"] == 0
        and (c["samples"] >= samples if kind == "raw" else c["records"] == written))
    if out.get("server_cpu_s") is not None and got:
        out["server_cpu_us_per_record"] = round(1e6 * out["server_cpu_s"] / got, 3)
    return out


def preload(addr, feed, station, count, timeout=10.0):
    """Feed `count` records (no clients, no figures) and wait until INFO
    STATIONS shows them: data for the fan-out and handshake scenarios."""
    before = _end_seq(addr, station, timeout)
    feed_once(feed, station, count, 0, prepare(feed, station, count, timeout), timeout)
    deadline = time.monotonic() + timeout + count / 20_000
    while True:
        after = _end_seq(addr, station, timeout)
        if after is None and before is None:
            return None              # INFO does not tell (ringserver?): the feed finished
        if after is not None and proto.held_records(before or 0, after) >= count:
            return proto.held_records(before or 0, after)
        if time.monotonic() > deadline:
            raise RuntimeError("preload: %s did not show %d new records in INFO STATIONS"
                               % (station, count))
        time.sleep(0.1)

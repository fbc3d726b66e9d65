"""Raw device samples into a station's stream processor, in process.

Both raw sources use this: the in-process client of a device (``raw_source``)
and the push ingest port.  Per mapped channel id it keeps

* a tree: a pass-through one (``LOC.CHA:ID``: the samples become that
  stream, encoded with the station's Steim level) or the station proc's
  ``input`` (``INPUT:ID``: the samples run through its decimation tree);
* a clock in the device's own time base (anchor time + samples since), so
  that packets continue the same records as long as their times do, an
  overlap is trimmed (duplicates are dropped by time) and a jump closes the
  records (``reset``: encoders flush, filters restart);
* what is stored: the time of the last sample inside finished records,
  which is what the push port acknowledges.

Samples reach the trees as int32 (``protocol.to_int32``: integers exactly,
floats rounded half-even and clipped).
"""
import logging
import time

from .. import mseed
from ..records import location_channel
from .protocol import RawProtocolError, parse_channel_map, to_int32

log = logging.getLogger("seedlink_fast.raw")

__all__ = ["StationFeed"]

_US = 1_000_000


class _Channel:
    """One mapped channel id: its tree, clock and stored position."""

    __slots__ = ("entry", "tree", "rate", "outputs", "lag_model", "anchor_us", "count",
                 "quality", "timed", "stored_us", "before_anchor_us", "last_data",
                 "idle_flushed")

    def __init__(self, entry, tree, rate, outputs, lag_model):
        self.entry = entry
        self.tree = tree
        self.rate = rate
        self.outputs = outputs          # [(location, channel)] the tree writes
        self.lag_model = lag_model      # per node (parent, decimation, taps, has stream)
        self.anchor_us = None           # time of the sample `count` samples back
        self.count = 0
        self.quality = None
        self.timed = False              # the tree's clock is set
        self.stored_us = None           # last sample inside a stored record
        self.before_anchor_us = None    # last sample before the anchor (all stored)
        self.last_data = 0.0
        self.idle_flushed = True

    def next_us(self):
        """The time the next sample should have (float µs)."""
        return self.anchor_us + self.count * _US / self.rate

    def sample_us(self, k):
        """Time of the k-th sample since the anchor (integer µs, floor)."""
        return self.anchor_us + (k * _US) // self.rate

    def lag(self):
        """Input samples (counted back from the newest) not yet inside a
        finished record of the tree's highest-rate output: what a restart
        resumes from (see StationFeed._stored_end)."""
        pending = self.tree.pending_samples
        n = len(self.lag_model)
        cum = [1] * n
        path = [0] * n
        best = None                 # (decimation, lag) of the highest-rate output
        for j, (parent, decimation, taps, stream) in enumerate(self.lag_model):
            if parent < 0:
                continue
            cum[j] = cum[parent] * decimation
            path[j] = path[parent] + (pending[j][0] + taps) * cum[parent]
            if stream:
                here = (cum[j], -(path[j] + pending[j][1] * cum[j]))
                best = here if best is None else min(best, here)
        return 0 if best is None else -best[1]


class StationFeed:
    """The raw channels of one station (its ``raw_channels`` map)."""

    def __init__(self, server, station):
        self.server = server
        self.station = station
        self.config = station.config
        self.key = station.key
        self.entries = {e.id: e for e in parse_channel_map(self.config.raw_channels)}
        self.channels = {}                  # id -> _Channel
        self.session = None                 # the PushSession feeding it, if any
        self._resume = None                 # (location, channel) -> last stored sample (µs)
        self.samples = 0
        self.trimmed = 0                    # duplicate samples dropped

    # -- channels -------------------------------------------------------------

    def open_channel(self, spec):
        """Accept a channel a device announced (a ChannelSpec); returns the
        time of its last stored sample or None.  Unknown ids and rates that
        do not fit the station's configuration raise RawProtocolError."""
        entry = self.entries.get(spec.id)
        if entry is None:
            raise RawProtocolError("channel %d is not in the channel map of station %s"
                                   % (spec.id, self.key))
        chan = self.channels.get(spec.id)
        if chan is not None and chan.rate != spec.rate:
            if entry.input is not None:
                raise RawProtocolError("channel %d: rate %d Hz, but input %s of proc %s is "
                                       "%d Hz" % (spec.id, spec.rate, entry.input,
                                                  self.config.proc, chan.rate))
            log.warning("%s: channel %d changes rate %d -> %d Hz", self.key, spec.id,
                        chan.rate, spec.rate)
            chan.tree.flush()
            chan = None
        if chan is None:
            chan = self._make_channel(entry, spec.rate)
            self.channels[spec.id] = chan
            stored = self._stored_end(chan.outputs)
            if stored is not None:
                chan.stored_us = chan.before_anchor_us = stored
                # the next sample continues the stored stream
                chan.anchor_us = stored
                chan.count = 1
        return chan.stored_us

    def _make_channel(self, entry, rate):
        processor = self.server.processor
        if entry.input is None:
            tree = processor.pass_through_tree(self.key, entry.name, entry.location,
                                               entry.channel, rate)
            return _Channel(entry, tree, rate, [(entry.location, entry.channel)],
                            [(-1, 1, 0, False), (0, 1, 0, True)])
        resolved = self._resolved_input(entry.input)
        if resolved is None:
            raise RawProtocolError("station %s has no proc input %r" % (self.key, entry.input))
        inp = resolved.input
        if inp.rate_den != 1 or inp.rate_num != rate:
            raise RawProtocolError("channel %d: rate %d Hz, but input %s of proc %s is %d/%d Hz"
                                   % (entry.id, rate, entry.input, self.config.proc,
                                      inp.rate_num, inp.rate_den))
        tree = processor.station_tree(self.key, entry.input)
        # per node, in the tree's order: (parent, decimation, taps, has
        # stream), for lag()
        model = [(-1, 1, 0, False)]

        def walk(node, parent):
            model.append((parent, node.decimation,
                          len(node.filter.taps) if node.filter is not None else 0,
                          node.channel is not None))
            me = len(model) - 1
            for child in node.children:
                walk(child, me)

        for top in resolved.nodes:
            walk(top, 0)
        outputs = [(n.location, n.channel) for n in resolved.streams()]
        return _Channel(entry, tree, rate, outputs, model)

    def _resolved_input(self, name):
        if not self.config.proc:
            return None
        return self.server.processor.proc_inputs(self.config.proc).get(name)

    def _stored_end(self, outputs):
        """Time of the last stored sample of the channel's streams, read from
        the newest records of the buffer.  For a tree, the newest of its
        outputs (the highest rate): resuming there duplicates nothing, and
        the decimated streams restart their filters, as after any restart."""
        if self._resume is None:
            self._resume = self._scan_buffer()
        ends = [self._resume[o] for o in outputs if o in self._resume]
        return max(ends) if ends else None

    def _scan_buffer(self, limit=200_000):
        wanted = set()
        for entry in self.entries.values():
            if entry.input is None:
                wanted.add((entry.location, entry.channel))
            else:
                resolved = self._resolved_input(entry.input)
                if resolved is not None:
                    wanted.update((n.location, n.channel) for n in resolved.streams())
        found = {}
        buf = self.station.buffer
        pos = buf.next_position
        lowest = max(buf.oldest_position, pos - limit)
        while pos > lowest and len(found) < len(wanted):
            start = max(lowest, pos - 512)
            records = buf.read_range(start, pos - start)
            for rec in reversed(records):
                lc = location_channel(rec)
                if lc in wanted and lc not in found and rec[0]:
                    try:
                        r = mseed.unpack(rec, decode=False)[0]
                        found[lc] = r.endtime_ns // 1000
                    except ValueError:
                        continue
            if len(records) != pos - start:
                break
            pos = start
        return found

    # -- data -----------------------------------------------------------------

    def feed(self, spec, time_us, quality, samples):
        """One device packet (samples in the wire dtype)."""
        chan = self.channels.get(spec.id)
        if chan is None:
            raise RawProtocolError("channel %d was not opened" % spec.id)
        n = len(samples)
        chan.last_data = time.monotonic()
        if n == 0:
            return
        rate = chan.rate
        new_time = None
        if chan.anchor_us is None:
            new_time = time_us
        else:
            drift = time_us - chan.next_us()
            half = 0.5 * _US / rate
            if drift < -half:
                # overlap: skip what we have (a re-sent packet)
                skip = int(round(-drift * rate / _US))
                if skip >= n:
                    self.trimmed += n
                    return
                self.trimmed += skip
                samples = samples[skip:]
                n -= skip
                time_us += (skip * _US) // rate
            elif drift > half:
                # a gap: close the records (and restart the filters)
                chan.before_anchor_us = chan.sample_us(chan.count - 1)
                chan.tree.reset()
                new_time = time_us
        if new_time is None and not chan.timed:
            # the first packet after a restart: the stored end came from a
            # record header (SeisComP's clock may be 1 µs early); from here on
            # the device's own times count
            new_time = time_us
        x = to_int32(samples)
        if new_time is not None:
            chan.anchor_us = new_time
            chan.count = 0
            chan.quality = quality
            chan.timed = True
            chan.tree.feed(x, time=divmod(new_time, _US), timing_quality=quality)
        elif quality != chan.quality or not chan.timed:
            chan.quality = quality
            chan.timed = True
            chan.tree.feed(x, time=divmod(chan.sample_us(chan.count), _US),
                           timing_quality=quality)
        else:
            chan.tree.feed(x)
        chan.count += n
        chan.idle_flushed = False
        self.samples += n

    def flush_idle(self, now, idle):
        """Close the records of channels without data for `idle` seconds;
        True when something was flushed."""
        flushed = False
        for chan in self.channels.values():
            if not chan.idle_flushed and now - chan.last_data >= idle:
                chan.tree.flush()
                chan.idle_flushed = True
                flushed = True
        return flushed

    def stored(self):
        """Update and return {id: time of the last sample inside stored
        records} (call after the station's records were stored)."""
        out = {}
        for cid, chan in self.channels.items():
            if chan.anchor_us is None:
                continue
            done = chan.count - chan.lag()
            if done > 0:
                chan.stored_us = chan.sample_us(done - 1)
            elif chan.before_anchor_us is not None:
                chan.stored_us = chan.before_anchor_us
            if chan.stored_us is not None:
                out[cid] = chan.stored_us
        return out

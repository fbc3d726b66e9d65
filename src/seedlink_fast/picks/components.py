"""Which channels make up the waveform window of a pick.

With an inventory (StationXML, or anything ObsPy's ``read_inventory``
reads): every channel with the pick's network, station and location and the
same first two channel letters (band and instrument code) whose network,
station and channel epochs are open at the pick time.  A pick on
``GE.APE..BHZ`` gives ``BHZ, BHN, BHE`` or ``BHZ, BH1, BH2`` (or all five if
both kinds are open).  A stream missing from the inventory falls back to the
rule below, with a log message.

Without an inventory, the rule: a pick on a channel ending in ``Z``, ``N``
or ``E`` asks for ``Z, N, E``, with ``Z, 1, 2`` as the alternative; a pick on
``1``, ``2`` or ``3`` asks for ``Z, 1, 2`` with ``Z, N, E`` as the
alternative; any other last letter (a hydrophone ``HDF``, a single
component) asks for the picked channel alone.  The clients switch to the
alternative when the horizontals of the first set have no data at all but
those of the alternative do (see ``Request.switch_components``).

>>> r = ComponentResolver()
>>> r.resolve("XX", "TEST", "", "HHZ", 0)
(['HHZ', 'HHN', 'HHE'], ['HHZ', 'HH1', 'HH2'])
>>> r.resolve("XX", "TEST", "", "HDF", 0)
(['HDF'], None)
"""
import logging

from .model import NS

__all__ = ["ComponentResolver"]

log = logging.getLogger("seedlink_fast.picks")

_ZNE, _Z12 = "ZNE", "Z12"


def _rule(channel):
    band, comp = channel[:2], channel[2:]
    if comp in ("Z", "N", "E"):
        return [band + c for c in _ZNE], [band + c for c in _Z12]
    if comp in ("1", "2", "3"):
        return [band + c for c in _Z12], [band + c for c in _ZNE]
    return [channel], None


def _ns(date):
    """An ObsPy UTCDateTime (or None) as ns; None stays None."""
    return None if date is None else int(date.ns)


def _open(start, end, t):
    return (start is None or start <= t) and (end is None or t < end)


class ComponentResolver:
    """Maps a picked stream to its components (see module docs).

    ``ComponentResolver(inventory)`` takes an ObsPy Inventory, a file name,
    or None for the naming rule.
    """

    def __init__(self, inventory=None):
        self.epochs = None      # (net, sta, loc, band2) -> [(cha, start_ns, end_ns)]
        if inventory is None:
            return
        if isinstance(inventory, (str, bytes)) or hasattr(inventory, "__fspath__"):
            from obspy import read_inventory    # only needed with an inventory

            inventory = read_inventory(str(inventory))
        self.epochs = {}
        for net in inventory:
            for sta in net:
                n0, n1 = _ns(net.start_date), _ns(net.end_date)
                s0, s1 = _ns(sta.start_date), _ns(sta.end_date)
                for cha in sta:
                    c0, c1 = _ns(cha.start_date), _ns(cha.end_date)
                    # an epoch is the intersection of network, station, channel
                    start = max((t for t in (n0, s0, c0) if t is not None), default=None)
                    end = min((t for t in (n1, s1, c1) if t is not None), default=None)
                    key = (net.code, sta.code, cha.location_code or "", cha.code[:2])
                    self.epochs.setdefault(key, []).append((cha.code, start, end))

    def resolve(self, net, sta, loc, cha, time_ns):
        """``(components, alternatives or None)`` for a pick on net.sta.loc.cha."""
        if self.epochs is None:
            return _rule(cha)
        epochs = self.epochs.get((net, sta, loc, cha[:2]))
        if epochs is None:
            log.info("%s.%s.%s.%s is not in the inventory: using the Z/N/E rule",
                     net, sta, loc, cha)
            return _rule(cha)
        found = []
        for code, start, end in epochs:
            if _open(start, end, time_ns) and code not in found:
                found.append(code)
        if not found:
            log.info("%s.%s.%s.%s has no channel open at %.3f s: using the Z/N/E rule",
                     net, sta, loc, cha, time_ns / NS)
            return _rule(cha)
        # vertical first, then the others in inventory order
        found.sort(key=lambda c: c[2:] != "Z")
        return found, None

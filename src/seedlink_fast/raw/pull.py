"""A station whose ``raw_source`` is a device: the server connects to it
(the raw plugin's role, in process) and feeds its samples straight into the
station's stream processor, with no pipe in between."""
import asyncio
import logging

from .client import RawClient
from .protocol import RawProtocolError, parse_address

log = logging.getLogger("seedlink_fast.raw")

__all__ = ["PullSource"]


class PullSource:
    """Runs one RawClient for one StationFeed."""

    def __init__(self, server, feed):
        cfg = feed.config
        host, port = parse_address(cfg.raw_source)
        self.server = server
        self.feed = feed
        self.refused = set()          # ids whose announced rate does not fit
        self.client = RawClient(host, port, sorted(feed.entries), version=cfg.raw_version,
                                idle_timeout=cfg.raw_idle_timeout,
                                reconnect_delay=cfg.raw_reconnect, name=feed.key,
                                on_packet=self._packet, on_session=self._session,
                                on_disconnect=self._disconnect)
        self.task = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self.client.run())

    async def stop(self):
        self.client.stop()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        self.server.store_pending()

    def _session(self, version, specs):
        self.refused = set()
        for spec in specs.values():
            try:
                self.feed.open_channel(spec)
            except RawProtocolError as exc:
                log.error("%s: %s; channel ignored", self.feed.key, exc)
                self.refused.add(spec.id)
        log.info("%s: connected to %s (%s, %d channels)", self.feed.key,
                 self.feed.config.raw_source, version, len(specs))

    def _packet(self, spec, time_us, quality, samples):
        if spec.id in self.refused:
            return
        self.feed.feed(spec, time_us, quality, samples)
        self.server.schedule_store()

    def _disconnect(self, reason):
        log.info("%s: device %s: %s", self.feed.key, self.feed.config.raw_source, reason)

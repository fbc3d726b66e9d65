"""The seedlink_raw_plugin protocol: device side (Streamer) and wire format (protocol)."""
from .streamer import Channel, Streamer

__all__ = ["Channel", "Streamer"]

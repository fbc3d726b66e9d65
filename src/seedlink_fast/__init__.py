"""seedlink-fast: a drop-in SeedLink server with Cython hot paths.

The public modules are ``seedlink_fast.mseed`` (miniSEED 2 records and the
Steim codec), and the stream-processor, server and client modules as they
land.
"""
from ._version import __version__

__all__ = ["__version__"]

"""Exception hierarchy shared by every layer of seedlink-fast."""


class SeedLinkError(Exception):
    """Base class of every error raised by seedlink-fast."""


class ConfigError(SeedLinkError):
    """A configuration file is malformed; the message names file, line and reason."""

    def __init__(self, reason, filename=None, lineno=None):
        self.reason = reason
        self.filename = filename
        self.lineno = lineno
        where = ""
        if filename is not None:
            where = str(filename)
            if lineno is not None:
                where += ":%d" % lineno
            where += ": "
        super().__init__(where + reason)


class RecordError(SeedLinkError, ValueError):
    """A miniSEED record is corrupt or cannot be parsed; the message names it."""


class PluginProtocolError(SeedLinkError, ValueError):
    """A plugin wrote a packet that breaks the fd 63 protocol."""

"""What the server needs to know about a stored 512-byte record, read the
way SeisComP's seedlink (through libslink's header structs) reads it: the
fixed header is big-endian, and the record type comes from the blockette
chain.

Types: ``D`` data, ``E`` event (blockette 2xx), ``C`` calibration (3xx),
``T`` timing (5xx), ``L`` log (rate factor 0 with samples), ``O`` opaque
(rate factor 0, no samples, blockette 2000).  ``None`` means the type could
not be determined (SeisComP logs "could not determine packet type" and never
delivers such a record).
"""
import struct

RECORD_SIZE = 512
TYPES = "DECTLO"            # SeisComP's order, also the INFO sort order
MAX_HEADER_SIZE = 512       # SeisComP: blockettes must start within the record

_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")


def is_blank(record):
    """A record whose first byte is NUL is a placeholder: never delivered."""
    return record[0] == 0


def record_type(record):
    """The SeedLink record type letter, or None when it cannot be determined."""
    if len(record) < 48:
        return None
    num_samples = _U16.unpack_from(record, 30)[0]
    rate_factor = _I16.unpack_from(record, 32)[0]
    offset = _I16.unpack_from(record, 46)[0]
    has_2000 = False
    for _ in range(64):                       # bounded walk of the chain
        if offset < 0 or offset > MAX_HEADER_SIZE or offset + 4 > len(record):
            return None
        btype, nxt = struct.unpack_from(">HH", record, offset)
        if 200 <= btype <= 299:
            return "E"
        if 300 <= btype <= 399:
            return "C"
        if 500 <= btype <= 599:
            return "T"
        if btype == 2000:
            has_2000 = True
        offset = nxt
        if offset == 0:
            break
    else:
        return None                           # a loop in the chain
    if rate_factor == 0:
        if num_samples != 0:
            return "L"
        if has_2000:
            return "O"
    return "D"


def location_channel(record, offset=0):
    """(location, channel) from the fixed header of the record starting at
    `offset` in `record`, trailing blanks removed."""
    return (record[offset + 13:offset + 15].decode("latin-1").rstrip(" "),
            record[offset + 15:offset + 18].decode("latin-1").rstrip(" "))

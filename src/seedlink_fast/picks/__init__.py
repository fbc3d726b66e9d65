"""Pick-driven waveform clients: for every pick, collect the records of a
window around it on all components of the picked stream, and hand them to
a callback or write them to a directory.

Two clients, sharing pick intake, window logic and output
(docs/pick-clients.md):

* :class:`PollingClient` asks a request/response source (FDSN dataselect,
  an SDS tree, SeedLink dial-up windows) once a window has ended, and
  retries the missing pieces every ``interval`` seconds;
* :class:`StreamingClient` buffers real-time SeedLink data and finishes a
  pick as soon as its window is in, with an optional archive for older
  windows.

::

    from seedlink_fast.picks import PollingClient, open_pick_source

    def repick(result):                   # a WindowResult
        for sid, comp in result.components.items():
            print(sid, comp.start_ns, comp.samples[:5], comp.complete)

    client = PollingClient("fdsnws://localhost:8080", before=60, after=120,
                           on_window=repick, output="windows")
    client.add_source(open_pick_source("picks.xml"))
    client.run()                          # returns when the file's picks are done
"""
from .client import PickClient, Request
from .components import ComponentResolver
from .model import Pick, PickError, PickFilter, format_time, parse_time
from .parse import parse_file, parse_json_line, parse_xml, pick_from_dict, pick_to_scml
from .polling import PollingClient
from .recordstream import (
    DataSourceError, FdsnDataselect, SdsArchive, open_archive, parse_url, write_sds)
from .results import ComponentResult, DirectoryOutput, WindowResult
from .seedlink import SeedLinkDialup
from .sources import (
    DirectorySource, FileSource, LineSource, PickSource, TcpSource, open_pick_source)
from .streaming import StreamingClient
from .window import Coverage, Rec, RecordSet, assess, split_records, trim

__all__ = [
    "PickClient", "PollingClient", "StreamingClient", "Request",
    "Pick", "PickError", "PickFilter", "ComponentResolver", "parse_time", "format_time",
    "parse_xml", "parse_json_line", "parse_file", "pick_from_dict", "pick_to_scml",
    "open_archive", "parse_url", "FdsnDataselect", "SdsArchive", "SeedLinkDialup",
    "DataSourceError", "write_sds",
    "WindowResult", "ComponentResult", "DirectoryOutput",
    "PickSource", "FileSource", "DirectorySource", "LineSource", "TcpSource",
    "open_pick_source",
    "Rec", "RecordSet", "Coverage", "assess", "split_records", "trim",
]

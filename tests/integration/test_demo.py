"""``seedlink-fast demo``: the README's first command works on a fresh
directory, serves live data to a SeedLink client and stops on Ctrl-C."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from seedlink_fast import mseed
from serverproc import free_port
from slclient import SLClient


def test_demo_serves_live_data_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    log = open(tmp_path / "demo.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "seedlink_fast", "demo", "--port", str(port), "--rate", "20000",
         "--seconds", "30"], cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 30
        seen = {}
        while time.monotonic() < deadline and not {"FHZ", "JHZ", "HHZ"} <= set(seen):
            time.sleep(0.5)
            try:
                with SLClient(port, timeout=10) as c:
                    assert c.command("STATION DEMO XX") == "OK"
                    assert c.command("FETCH 000000") == "OK"
                    c.send("END")
                    data = c.read_packets_until_end()
            except OSError:
                continue
            records = [data[i + 8:i + 520] for i in range(0, len(data), 520)]
            for rec in mseed.unpack(b"".join(records)):
                seen.setdefault(rec.channel, []).append(rec)
        assert {"FHZ", "JHZ", "HHZ"} <= set(seen), (set(seen), (tmp_path / "demo.log").read_text())
        # one sine period per second, amplitude 60 (120 on an "event")
        fhz = np.concatenate([r.samples for r in seen["FHZ"]])
        assert 55 <= np.abs(fhz).max() <= 120
        assert seen["FHZ"][0].sample_rate == 4000
        assert seen["JHZ"][0].sample_rate == 20000
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
    out = (tmp_path / "demo.log").read_text()
    assert "slinktool" in out and "records/s" in out
    assert (tmp_path / "seedlink-demo-data" / "XX_DEMO" / "buffer.xml").exists()

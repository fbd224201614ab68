"""FrameWriter (app/transport/engine.py) over a real socket, in the suite's async mode."""

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ASYNC_MODE, process_environment, template_transport_only

pytestmark = template_transport_only("FrameWriter is its writer")


def test_frames_written_directly_and_from_the_backlog_arrive_whole_and_in_order():
    result = subprocess.run([sys.executable, "-m", "tests.transport.frame_writer_run", ASYNC_MODE],
                            capture_output=True, text=True, timeout=60,
                            env=process_environment(), cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # the socket is a plain one: written without the WebSocket library
    assert seen["direct"] is True
    # the peer was not reading: the rest waited for a flusher, which ended when done
    assert seen["flushing_while_paused"] is True
    assert seen["in_order"] is True
    assert seen["flushing_after"] is False and seen["backlog_after"] == 0
    # past its byte bound, a writer whose peer does not read is cut at that write
    overflow = seen["overflow"]
    assert overflow["cut"] is True and overflow["kept"] == 0
    assert 15 <= overflow["cut_after"] <= 25  # ~200 KB of 10 KB frames
    assert seen["at_once"] == {"first_at_once": True, "second_waited": True,
                               "after_a_burst_batched": True}

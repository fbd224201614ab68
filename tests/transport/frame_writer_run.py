"""Run by test_frame_writer.py in a fresh process (the async library patches the stdlib).

    python -m tests.transport.frame_writer_run eventlet|gevent

Writes frames of every header size through a FrameWriter into a socket whose peer does
not read yet, then reads them all back; prints one JSON line of what it saw.
"""

import sys

MODE = sys.argv[1]
if MODE == "gevent":
    import gevent.monkey

    gevent.monkey.patch_all()
else:
    import eventlet

    eventlet.monkey_patch()

import json  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402

import engineio  # noqa: E402
from engineio import packet  # noqa: E402

from app.transport.engine import FrameWriter, WriteBatch  # noqa: E402
from app.transport.websocket import raw_socket  # noqa: E402

SIZES = [0, 10, 125, 126, 65_535, 65_536, 69_000]
COUNT = 140


def read_frames(sock: socket.socket, count: int) -> list[tuple[int, str]]:
    buffer = bytearray()

    def take(n: int) -> bytes:
        while len(buffer) < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise EOFError(f"connection closed with {len(buffer)} bytes pending")
            buffer.extend(chunk)
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    frames = []
    for _ in range(count):
        opcode, length = take(2)
        length &= 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", take(8))
        frames.append((opcode, take(length).decode()))
    return frames


def writer_to_a_paused_peer(server) -> tuple[FrameWriter, socket.socket]:
    """A FrameWriter on a socket with a small buffer, and its peer (not read yet)."""
    writer_end, reader_end = socket.socketpair()
    writer_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = FrameWriter(None, writer_end, server, WriteBatch(server), raw_socket(writer_end))
    return writer, reader_end


def over_the_byte_bound(server) -> dict:
    """A peer that never reads: past max_queued bytes (the batch being written
    included) the writer cuts the connection during the write itself."""
    writer, _peer = writer_to_a_paused_peer(server)
    writer.max_queued = 200_000
    frame = packet.Packet(packet.MESSAGE, data="y" * 10_000)
    writer.write(frame)
    server.sleep(0.2)  # written up to the kernel's buffer; a flusher waits with the rest
    written = 1
    while not writer.closed and written < 1000:
        writer.write(packet.Packet(packet.MESSAGE, data="y" * 10_000))
        written += 1
    return {"cut_after": written, "cut": writer.closed, "kept": writer.backlog}


def at_once_then_batched(server) -> dict:
    """A calm connection's first frame of a turn is written at once, not at the end of
    the turn (a room's median member waited for every member's frame to be queued);
    the next ones that turn wait for the batch. A connection whose turn brought several
    frames is batched from its first frame, for CALM_TURNS turns."""
    writer_end, peer = socket.socketpair()
    writer = FrameWriter(None, writer_end, server, WriteBatch(server), raw_socket(writer_end))
    peer.setblocking(False)

    def unread() -> bytes:
        try:
            return peer.recv(1 << 16)
        except BlockingIOError:
            return b""

    writer.write(packet.Packet(packet.MESSAGE, data="first"))
    first = unread()  # (no yield since the write)
    writer.write(packet.Packet(packet.MESSAGE, data="second"))
    second_before_the_turn = unread()
    server.sleep(0.05)
    second_after = unread()
    writer.write(packet.Packet(packet.MESSAGE, data="third"))
    third_before_the_turn = unread()  # the last turn brought two: batched now
    server.sleep(0.05)
    return {"first_at_once": first.endswith(b"4first"),
            "second_waited": second_before_the_turn == b"" and second_after.endswith(b"4second"),
            "after_a_burst_batched": third_before_the_turn == b"" and unread().endswith(b"4third")}


def main() -> None:
    server = engineio.Server(async_mode=MODE)
    server.max_queued_bytes = 50_000_000  # this run pauses its reader on purpose
    writer, reader_end = writer_to_a_paused_peer(server)
    sent = []
    for n in range(COUNT):
        text = f"{n}:" + "x" * SIZES[n % len(SIZES)]
        sent.append((0x81, "4" + text))
        writer.write(packet.Packet(packet.MESSAGE, data=text))
    server.sleep(0.2)  # the batch writes what the socket takes; a flusher waits with the rest
    flushing_while_paused = writer.flushing
    received = read_frames(reader_end, COUNT)
    server.sleep(0.2)
    print(json.dumps({"direct": writer.raw is not None, "flushing_while_paused":
                      flushing_while_paused, "in_order": received == sent,
                      "flushing_after": writer.flushing, "backlog_after": writer.backlog,
                      "overflow": over_the_byte_bound(server),
                      "at_once": at_once_then_batched(server)}))


main()

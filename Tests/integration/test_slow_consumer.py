"""A client that stops reading is dropped; nobody else is slowed or loses anything."""

import socket
import threading
import time

import pytest

from swb import parse_msg

COUNT = 5000
BODY = 3000          # bytes per message: COUNT * BODY (15 MB) is far more than the kernel buffers hold
WINDOW = 16          # SAYs in flight; well below session_queue so the fast reader is never at risk
MAX_LAG = 32         # messages sent but not yet read by the reader: it stays below SESSION_QUEUE even
                     # when a loaded machine starves its thread (carol, not reading, is not waited for)
SESSION_QUEUE = 64


@pytest.mark.server_config(
    limits={"session_queue": SESSION_QUEUE},
    line={"rate_per_second": 1_000_000, "rate_burst": 1_000_000},
)
def test_slow_consumer_is_disconnected_others_unaffected(server):
    reader = server.client("bob", timeout=60)
    reader.join("lobby")
    # carol joins and then never reads; a small receive buffer makes her fall behind sooner.
    slow = server.client("carol", rcvbuf=4096, timeout=60)
    slow.join("lobby")
    sender = server.client("alice", timeout=60)
    sender.join("lobby")
    reader.ping("ready")

    body = "b" * BODY
    acks: list[int] = []
    received = []
    other_lines = []
    errors = []

    def read_all():
        try:
            while len(received) < COUNT:
                line = reader.next_line(timeout=60)
                if line.startswith("MSG lobby"):
                    received.append(parse_msg(line))
                elif line.startswith("ERR"):
                    raise AssertionError(f"reader got {line}")
                else:
                    other_lines.append(line)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=read_all, daemon=True)
    t.start()

    sent = 0
    deadline = time.monotonic() + 120
    while len(acks) < COUNT and time.monotonic() < deadline:
        while sent < COUNT and sent - len(acks) < WINDOW and sent - len(received) < MAX_LAG:
            sender.send(f"SAY lobby {sent} {body}")
            sent += 1
        if sent > len(acks):
            r = sender.reply(timeout=60)
            assert r.startswith("OK SAY "), f"after {len(acks)} acks: {r}"
            acks.append(int(r.split()[2]))
        else:
            time.sleep(0.001)      # every SAY acked: wait for the reader to catch up
        if errors:
            break
    t.join(120)
    if errors:
        raise errors[0]
    assert not t.is_alive(), f"reader got only {len(received)} of {COUNT} messages"

    # The sender got every ack, in order.
    assert len(acks) == COUNT
    assert acks == sorted(acks) and len(set(acks)) == COUNT
    # The reader got every message, in order, exactly the acked seqs.
    assert [m.seq for m in received] == acks
    for i, m in enumerate(received):
        assert m.user == "alice" and m.text == f"{i} {body}", f"message {i} wrong: {m.text[:40]!r}"

    # The slow client has been disconnected: draining its socket ends in EOF/reset,
    # and it did not get everything.
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    lines = slow.read_until_closed(timeout=60)
    msgs = [l for l in lines if l.startswith("MSG lobby")]
    assert len(msgs) < COUNT, "slow client received everything and was not disconnected"
    errs = [l for l in lines if l.startswith("ERR")]
    assert all(l.startswith("ERR slow_consumer") for l in errs), errs
    # Its leave is announced to the room.
    if "PARTED lobby carol line" not in other_lines:
        reader.expect("PARTED lobby carol line", timeout=30)
    # The server is fine afterwards.
    reader.ping("after")
    sender.say("lobby", "after the storm")

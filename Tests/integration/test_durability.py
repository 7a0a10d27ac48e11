"""Acknowledged means committed: kill -9 loses nothing that was acked."""

import pytest

from swb import parse_msg

FAST = {"line": {"rate_per_second": 100000, "rate_burst": 100000}}


def _history(server, room="lobby"):
    c = server.client("bob", timeout=30)
    count, lines = c.history_cmd(room, 1000, timeout=30)
    c.close()
    assert count == len(lines)
    return {m.seq: m for m in (parse_msg(l) for l in lines if l.startswith("MSG"))}


@pytest.mark.server_config(**FAST)
def test_acked_messages_survive_kill9(server):
    a = server.client("alice", timeout=30)
    a.join("lobby")
    a.send_raw("".join(f"SAY lobby durable-{i}\n" for i in range(200)).encode())
    acked = {}
    for i in range(200):
        r = a.reply(timeout=30)
        assert r.startswith("OK SAY "), r
        acked[int(r.split()[2])] = f"durable-{i}"
    a.close()

    server.kill9()
    server.start()

    hist = _history(server)
    missing = sorted(set(acked) - set(hist))
    assert not missing, f"{len(missing)} acked messages lost after kill -9, e.g. seqs {missing[:10]}"
    for seq, text in acked.items():
        assert hist[seq].text == text and hist[seq].user == "alice"

    # Sequence numbers continue after the restart, no reuse.
    a = server.client("alice")
    a.join("lobby")
    assert a.say("lobby", "after restart") > max(acked)


@pytest.mark.server_config(**FAST)
def test_kill9_in_the_middle_of_a_stream(server):
    """kill -9 while acks are still flowing: every ack received before the kill is in history,
    and history holds nothing that contradicts an ack."""
    a = server.client("alice", timeout=30)
    a.join("lobby")
    n = 900  # with alice's join, all of it fits in one `HISTORY lobby 1000`
    a.send_raw("".join(f"SAY lobby stream-{i}\n" for i in range(n)).encode())
    acked = {}
    for i in range(n):
        r = a.reply(timeout=30)
        assert r.startswith("OK SAY "), r
        acked[int(r.split()[2])] = f"stream-{i}"
        if i == 100:
            server.kill9()
            break
    # Acks already in the socket buffer were sent before the kill: they count too.
    i += 1
    for line in a.drain(2.0):
        if line.startswith("OK SAY "):
            acked[int(line.split()[2])] = f"stream-{i}"
            i += 1
    a.close()

    server.start()
    hist = _history(server)
    missing = sorted(set(acked) - set(hist))
    assert not missing, f"{len(missing)} acked messages lost, e.g. {missing[:10]}"
    for seq, text in acked.items():
        assert hist[seq].text == text
    # History is gap-free from the first message on (nothing half-written).
    seqs = sorted(hist)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap in history after kill -9"

"""HISTORY and JOIN <room> <since> (resume without gap or duplicate)."""

import pytest

from swb import parse_msg

FAST = {"line": {"rate_per_second": 10000, "rate_burst": 10000}}


def _send_many(client, room, texts):
    client.send_raw("".join(f"SAY {room} {t}\n" for t in texts).encode())
    seqs = []
    for t in texts:
        r = client.reply(timeout=30)
        assert r.startswith("OK SAY "), f"SAY {t}: {r}"
        seqs.append(int(r.split()[2]))
    return seqs


@pytest.mark.server_config(**FAST)
def test_history_returns_last_n_oldest_first(server):
    a = server.client("alice")
    a.join("lobby")
    texts = [f"m{i}" for i in range(30)]
    seqs = _send_many(a, "lobby", texts)
    assert seqs == list(range(seqs[0], seqs[0] + 30))

    count, lines = a.history_cmd("lobby", 10)
    assert count == 10 == len(lines), lines
    msgs = [parse_msg(l) for l in lines]
    assert [m.text for m in msgs] == texts[-10:]
    assert [m.seq for m in msgs] == seqs[-10:]
    assert all(m.user == "alice" and m.via == "line" for m in msgs)

    # Default limit: everything here (< 50), including alice's join, oldest first.
    count, lines = a.history_cmd("lobby")
    assert count == len(lines)
    assert [parse_msg(l).text for l in lines if l.startswith("MSG")] == texts
    assert lines[0] == "JOINED lobby alice line", lines[:3]

    # Another user who never joined may read it as well.
    b = server.client("bob")
    count, lines = b.history_cmd("lobby", 1000)
    assert [parse_msg(l).seq for l in lines if l.startswith("MSG")] == seqs

    count, lines = a.history_cmd("lobby", 1)
    assert count == 1 and parse_msg(lines[0]).text == "m29"


@pytest.mark.server_config(**FAST)
def test_join_since_replays_exactly_the_missed_messages(server):
    a = server.client("alice")
    a.join("lobby")
    b = server.client("bob")
    b.join("lobby")
    before = _send_many(a, "lobby", [f"before-{i}" for i in range(5)])
    last_seen = None
    for i in range(5):
        last_seen = b.expect_msg("lobby", f"before-{i}").seq
    assert last_seen == before[-1]
    b.close()
    a.expect("PARTED lobby bob line", timeout=15)

    missed_texts = [f"missed-{i}" for i in range(20)]
    missed = _send_many(a, "lobby", missed_texts)

    b = server.client("bob")
    ok_seq, replay = b.join("lobby", since=last_seen)
    msgs = [parse_msg(l) for l in replay if l.startswith("MSG")]
    assert [m.seq for m in msgs] == missed, f"replay seqs {[m.seq for m in msgs]} != missed {missed}"
    assert [m.text for m in msgs] == missed_texts
    assert "PARTED lobby bob line" in replay, replay  # bob's own leave happened after last_seen
    assert all(l.startswith(("MSG ", "JOINED ", "PARTED ")) for l in replay), replay
    assert ok_seq >= missed[-1]

    # Then live messages continue after OK JOIN, no duplicate of the replay.
    live = a.say("lobby", "live-1")
    m = b.expect_msg("lobby", user="alice", timeout=10)
    assert (m.seq, m.text) == (live, "live-1")
    assert live > ok_seq


@pytest.mark.server_config(**FAST)
def test_join_since_while_traffic_continues(server):
    """Resume while another client keeps sending: the union of replay and live is gap-free."""
    a = server.client("alice", timeout=30)
    a.join("lobby")
    first = _send_many(a, "lobby", [f"x{i}" for i in range(10)])
    b = server.client("bob", timeout=30)
    # Pipeline alice's next batch, then join with since in the middle of it.
    a.send_raw("".join(f"SAY lobby y{i}\n" for i in range(100)).encode())
    ok_seq, replay = b.join("lobby", since=first[4])
    acks = []
    for _ in range(100):
        r = a.reply(timeout=30)
        assert r.startswith("OK SAY"), r
        acks.append(int(r.split()[2]))
    got = [parse_msg(l) for l in replay if l.startswith("MSG")]
    # everything after OK JOIN arrives live
    while not got or got[-1].seq < acks[-1]:
        line = b.next_line(timeout=30)
        if line.startswith("MSG "):
            got.append(parse_msg(line))
    chat_seqs = [m.seq for m in got]
    expected = first[5:] + acks
    assert chat_seqs == expected, "replay + live is not exactly the messages after since"
    assert [m.text for m in got] == [f"x{i}" for i in range(5, 10)] + [f"y{i}" for i in range(100)]


def test_history_bad_arguments(server):
    a = server.client("alice")
    r = a.cmd("HISTORY lobby notanumber")
    assert r.startswith("ERR bad_arguments"), r
    r = a.cmd("HISTORY")
    assert r.startswith("ERR bad_arguments"), r
    r = a.cmd("HISTORY bad!room")
    assert r.startswith("ERR invalid_room"), r
    a.ping()

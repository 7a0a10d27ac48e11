"""Room chat between line clients: replies, fan-out, echo rule, presence."""

import re

from swb import assert_chat_works, now_ms, parse_msg


def test_two_clients_chat_both_ways(server):
    a = server.client("alice")
    b = server.client("bob")
    join_a, _ = a.join("lobby")
    join_b, _ = b.join("lobby")
    assert join_b >= join_a

    s1 = a.say("lobby", "hello")
    m1 = b.expect_msg("lobby", user="alice")
    assert (m1.room, m1.seq, m1.user, m1.via, m1.text) == ("lobby", s1, "alice", "line", "hello")
    assert abs(m1.ts - now_ms()) < 3_600_000, f"ts {m1.ts} is not server time in ms"
    assert s1 > join_b

    s2 = b.say("lobby", "hi alice")
    m2 = a.expect_msg("lobby", user="bob")
    assert (m2.seq, m2.user, m2.via, m2.text) == (s2, "bob", "line", "hi alice")

    s3 = a.say("lobby", "how are you?")
    m3 = b.expect_msg("lobby", user="alice")
    assert (m3.seq, m3.text) == (s3, "how are you?")
    assert m3.ts >= m1.ts

    # Nobody else is in the room: consecutive seqs, no gaps.
    assert [s1, s2, s3] == [s1, s1 + 1, s1 + 2]


def test_sender_gets_no_echo_but_own_other_connection_does(server):
    a1 = server.client("alice")
    a2 = server.client("alice")
    b = server.client("bob")
    for c in (a1, a2, b):
        c.join("lobby")

    seq = a1.say("lobby", "echo test")
    # The same user's other connection receives it ...
    m = a2.expect_msg("lobby", "echo test", user="alice")
    assert m.seq == seq and m.via == "line"
    b.expect_msg("lobby", "echo test", user="alice")

    # ... the sending connection does not: everything it gets up to bob's next line.
    b_seq = b.say("lobby", "sentinel")
    lines = a1.lines_until(re.compile(r"^MSG lobby \d+ \d+ bob line sentinel$"), timeout=10)
    assert not any(l.startswith("MSG") and "echo test" in l for l in lines), lines
    assert parse_msg(lines[-1]).seq == b_seq == seq + 1


def test_joined_and_parted_lines(server):
    a = server.client("alice")
    b = server.client("bob")
    a.join("lobby")
    b.join("lobby")
    a.expect("JOINED lobby bob line")

    c = server.client("carol")
    c.join("lobby")
    a.expect("JOINED lobby carol line")
    b.expect("JOINED lobby carol line")

    # PART
    assert c.cmd("PART lobby") == "OK PART lobby"
    a.expect("PARTED lobby carol line")
    b.expect("PARTED lobby carol line")

    # A parted client no longer receives the room.
    a.say("lobby", "after part")
    b.expect_msg("lobby", "after part")
    c.ping("x")
    assert not any("after part" in l for l in c.drain(0.5))

    # Join again, then disconnect without PART.
    c.join("lobby")
    a.expect("JOINED lobby carol line")
    c.close()
    a.expect("PARTED lobby carol line", timeout=15)
    b.expect("PARTED lobby carol line", timeout=15)
    assert_chat_works(a, b)


def test_one_occupant_per_user_and_protocol(server):
    b = server.client("bob")
    b.join("lobby")
    a1 = server.client("alice")
    a1.join("lobby")
    b.expect("JOINED lobby alice line")

    # A second connection of the same user on the same protocol is not a new occupant.
    a2 = server.client("alice")
    a2.join("lobby")
    assert b.cmd("WHO lobby") == "OK WHO lobby alice/line bob/line"
    a2.say("lobby", "sentinel-1")
    lines = b.lines_until(re.compile(r"^MSG lobby .* sentinel-1$"))
    assert not any(l.startswith("JOINED lobby alice") for l in lines), lines

    # The first connection leaving does not make alice leave ...
    a1.close()
    a2.ping()  # a2 is alive
    c = server.client("carol")
    c.join("lobby")
    b.expect("JOINED lobby carol line")
    s = c.say("lobby", "sentinel-2")
    lines = b.lines_until(re.compile(r"^MSG lobby .* sentinel-2$"), timeout=10)
    assert not any(l.startswith("PARTED lobby alice") for l in lines), lines
    assert b.cmd("WHO lobby") == "OK WHO lobby alice/line bob/line carol/line"

    # ... the last one does.
    a2.close()
    b.expect("PARTED lobby alice line", timeout=15)
    c.expect("PARTED lobby alice line", timeout=15)
    assert b.cmd("WHO lobby") == "OK WHO lobby bob/line carol/line"
    assert s > 0

"""The smaller commands: PING, WHO, ROOMS, QUIT, PART, pipelining."""

import re

import pytest

from swb import expect_err


def test_ping_and_quit(server):
    x = server.client()
    assert x.cmd("PING") == "PONG"
    assert x.cmd("PING abc123") == "PONG abc123"
    x.auth("alice", "alice-pw")
    assert x.cmd("QUIT") == "OK QUIT"
    assert x.read_until_closed(timeout=10) == []


def test_who_lists_occupants_sorted(server):
    a = server.client("alice")
    c = server.client("carol")
    b = server.client("bob")
    assert a.cmd("WHO lobby") in ("OK WHO lobby", "OK WHO lobby ")
    c.join("lobby")
    a.join("lobby")
    b.join("lobby")
    assert a.cmd("WHO lobby") == "OK WHO lobby alice/line bob/line carol/line"
    assert c.cmd("PART lobby") == "OK PART lobby"
    assert b.cmd("WHO lobby") == "OK WHO lobby alice/line bob/line"


def test_rooms_lists_group_rooms_sorted(server):
    a = server.client("alice")
    for room in ("zeta", "alpha", "mid.dle"):
        a.join(room)
    a.tell("bob", "dm rooms are not listed")
    r = a.cmd("ROOMS")
    assert r.startswith("OK ROOMS"), r
    rooms = r.split()[2:]
    assert rooms == sorted(rooms), r
    assert {"zeta", "alpha", "mid.dle"} <= set(rooms), r
    assert not any(x.startswith(("dm.", "calls.")) for x in rooms), r


def test_join_twice_and_part(server):
    a = server.client("alice")
    b = server.client("bob")
    b.join("lobby")
    s1, _ = a.join("lobby")
    s2, _ = a.join("lobby")  # allowed, same kind of reply
    assert s2 >= s1
    assert a.cmd("PART lobby") == "OK PART lobby"
    expect_err(a.cmd("PART lobby"), "not_joined")
    expect_err(a.cmd("SAY lobby gone"), "not_joined")
    b.expect("JOINED lobby alice line")
    b.expect("PARTED lobby alice line")


def test_pipelined_replies_in_command_order(server):
    a = server.client("alice")
    a.send_raw(b"PING 1\nJOIN lobby\nPING 2\nSAY lobby x\nFOO\nPING 3\nSAY nojoin y\nWHO lobby\nQUIT\n")
    got = a.read_until_closed(timeout=15)
    replies = [l for l in got if not l.startswith(("MSG ", "JOINED ", "PARTED "))]
    assert len(replies) == 9, replies
    assert replies[0] == "PONG 1"
    assert re.fullmatch(r"OK JOIN lobby \d+", replies[1]), replies
    assert replies[2] == "PONG 2"
    assert re.fullmatch(r"OK SAY \d+", replies[3]), replies
    assert replies[4].startswith("ERR unknown_command"), replies
    assert replies[5] == "PONG 3"
    assert replies[6].startswith("ERR not_joined"), replies
    assert replies[7] == "OK WHO lobby alice/line", replies
    assert replies[8] == "OK QUIT"


@pytest.mark.server_config(rooms={"auto_create": False})
def test_rooms_without_auto_create(server):
    a = server.client("alice")
    r = a.cmd("JOIN unknownroom")
    expect_err(r, "no_such_room")
    res = server.cli("room", "create", "newroom")
    assert res.returncode == 0, res.stderr
    a.join("newroom")
    assert "newroom" in a.cmd("ROOMS").split()[2:]


def test_pipelined_commands_see_the_effects_of_earlier_ones(server):
    """WHO and HISTORY sent right behind JOIN and SAY (without waiting) reflect them."""
    a = server.client("alice")
    a.send_raw(b"JOIN piped\nSAY piped hello\nWHO piped\nHISTORY piped\n")
    lines = a.lines_until(re.compile(r"^(OK HISTORY|ERR )"), timeout=15)
    replies = [l for l in lines if not l.startswith(("MSG ", "JOINED ", "PARTED "))]
    assert re.fullmatch(r"OK JOIN piped \d+", replies[0]), replies
    assert re.fullmatch(r"OK SAY \d+", replies[1]), replies
    assert replies[2] == "OK WHO piped alice/line", replies
    assert replies[3].startswith("OK HISTORY piped"), replies
    history = [l for l in lines if l.startswith("MSG ")]
    assert any(l.endswith(" alice line hello") for l in history), lines

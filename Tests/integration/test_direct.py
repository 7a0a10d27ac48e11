"""Direct messages: TELL and the dm.<a>.<b> room."""

import re

from swb import expect_err, parse_msg


def test_tell_reaches_every_connection_of_both_users_and_nobody_else(server):
    a1 = server.client("alice")
    a2 = server.client("alice")
    b1 = server.client("bob")
    b2 = server.client("bob")
    c = server.client("carol")

    seq = a1.tell("bob", "hi bob")
    for who in (b1, b2, a2):
        m = who.expect_msg("dm.alice.bob", "hi bob", timeout=10)
        assert (m.seq, m.user, m.via) == (seq, "alice", "line"), (who.name, m)

    # Replying from bob uses the same room (names sorted), the next seq.
    seq2 = b2.tell("alice", "hi alice")
    m = a1.expect_msg("dm.alice.bob", "hi alice", timeout=10)
    assert (m.seq, m.user) == (seq2, "bob")
    assert seq2 == seq + 1
    b1.expect_msg("dm.alice.bob", "hi alice")
    a2.expect_msg("dm.alice.bob", "hi alice")
    # The sending connections got no MSG of their own line.
    b2.ping("s")
    assert not any("hi alice" in l for l in b2.drain(0.5) if l.startswith("MSG"))
    a1_lines = list(a1.backlog) + a1.drain(0.5)
    assert not any("hi bob" in l for l in a1_lines), a1_lines

    # carol sees nothing of it; her own DM from alice afterwards is the first thing she gets.
    a1.tell("carol", "only for carol")
    lines = c.lines_until(re.compile(r"^MSG dm\.alice\.carol \d+ \d+ alice line only for carol$"), timeout=10)
    assert lines == [lines[-1]], f"carol received other lines: {lines}"
    assert not any("dm.alice.bob" in l for l in c.drain(1.0))


def test_tell_unknown_user_and_invalid_user(server):
    a = server.client("alice")
    expect_err(a.cmd("TELL nosuchuser hello"), "no_such_user")
    r = a.cmd("TELL Bad.Name hello")
    assert r.startswith("ERR "), r
    assert r.split()[1] in ("invalid_user", "no_such_user"), r
    # Only ASCII letters fold: the Kelvin sign (U+212A) is not a "k", so no look-alike name
    # reaches an account or a room (Unicode lower-casing would make it "karol", "kitchen").
    expect_err(a.cmd("TELL \u212aarol hello"), "invalid_user")
    expect_err(a.cmd("JOIN \u212aitchen"), "invalid_room")
    # The connection still works.
    a.tell("bob", "still works")


def test_direct_room_cannot_be_joined_and_history_is_private(server):
    a = server.client("alice")
    b = server.client("bob")
    c = server.client("carol")
    s1 = a.tell("bob", "first")
    s2 = b.tell("alice", "second")
    b.expect_msg("dm.alice.bob", "first")
    a.expect_msg("dm.alice.bob", "second")

    expect_err(a.cmd("JOIN dm.alice.bob"), "direct_room")

    count, lines = a.history_cmd("dm.alice.bob")
    msgs = [parse_msg(l) for l in lines if l.startswith("MSG")]
    assert count == len(lines)
    assert [(m.seq, m.user, m.text) for m in msgs] == [(s1, "alice", "first"), (s2, "bob", "second")]

    count, lines = b.history_cmd("dm.alice.bob")
    assert [parse_msg(l).text for l in lines if l.startswith("MSG")] == ["first", "second"]

    # carol is not one of the two users.
    c.send("HISTORY dm.alice.bob")
    got = c.lines_until(re.compile(r"^(OK HISTORY|ERR )"))
    assert got[-1].startswith("ERR "), got
    assert not any(l.startswith("MSG") for l in got), got
    # calls.<user> is its owner's only.
    expect_err(c.cmd("JOIN calls.alice"), "forbidden")
    seq, _ = a.join("calls.alice")
    assert seq >= 0


def test_a_direct_room_named_by_hand_needs_the_other_user_to_exist(server):
    """`dm.<me>.<nobody>` is refused on every protocol, as TELL to nobody is: such a room would
    otherwise wait for whoever takes that name later. With an existing user it is TELL."""
    import openapi_check as oc
    from swb import USERS
    from wsclient import ws_client

    a = server.client("alice")
    expect_err(a.cmd("SAY dm.alice.zzzz hello"), "no_such_user")
    b = server.client("bob")
    r = a.cmd("SAY dm.alice.bob by name")
    assert re.fullmatch(r"OK SAY \d+", r), r
    b.expect_msg("dm.alice.bob", "by name")

    ws = ws_client(server, "alice")
    ws.send({"op": "send", "room": "dm.alice.nobody", "body": "x"})
    ws.expect_error("no_such_user")
    ws.send({"op": "send", "room": "dm.alice.bob", "body": "by name over ws"})
    assert ws.expect("ack")["room"] == "dm.alice.bob"

    token = oc.call(server.http_url, "POST", "/api/v1/token", {"user": "alice", "password": USERS["alice"]}).body["token"]
    r = oc.call(server.http_url, "POST", "/api/v1/rooms/dm.alice.nobody2/messages", {"body": "x"}, token=token)
    assert r.status == 404 and r.body["error"]["code"] == "no_such_user", r
    r = oc.call(server.http_url, "POST", "/api/v1/rooms/dm.alice.bob/messages", {"body": "by name over rest"}, token=token)
    assert r.status == 201, r
    # Nothing was stored for the refused rooms.
    count, _ = a.history_cmd("dm.alice.zzzz")
    assert count == 0

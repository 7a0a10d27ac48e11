"""Bad input is answered with ERR and never disturbs the other connections."""

import re
import socket
import time

import pytest

from swb import assert_chat_works, expect_err, send_while_reading


@pytest.fixture
def bystanders(server):
    """bob and carol chatting in lobby while someone misbehaves."""
    b = server.client("bob")
    c = server.client("carol")
    b.join("lobby")
    c.join("lobby")
    assert_chat_works(b, c)
    return b, c


def test_commands_before_auth(server, bystanders):
    x = server.client()
    expect_err(x.cmd("SAY lobby hello"), "auth_required")
    expect_err(x.cmd("JOIN lobby"), "auth_required")
    expect_err(x.cmd("TELL bob hi"), "auth_required")
    expect_err(x.cmd("HISTORY lobby"), "auth_required")
    assert x.cmd("PING before-auth") == "PONG before-auth"
    x.auth("alice", "alice-pw")
    x.join("lobby")
    assert_chat_works(*bystanders)
    assert_chat_works(x, bystanders[0])


def test_unknown_command_and_bad_arguments(server, bystanders):
    a = server.client("alice")
    expect_err(a.cmd("FROBNICATE now"), "unknown_command")
    expect_err(a.cmd("JOIN"), "bad_arguments")
    expect_err(a.cmd("TELL bob"), "bad_arguments")
    expect_err(a.cmd("JOIN lobby notaseq"), "bad_arguments")
    expect_err(a.cmd("AUTH alice alice-pw"), "already_authenticated")
    a.ping()
    assert_chat_works(*bystanders)


def test_control_characters_are_not_echoed_back(server, bystanders):
    """An unknown command is quoted in the ERR, with control characters shown as `?`: no NUL
    or terminal escape sequence goes back to the client."""
    c = server.client("alice")
    r = c.cmd("PI\x00NG\x1b[2J")
    expect_err(r, "unknown_command")
    assert "\x00" not in r and "\x1b" not in r and 'PI?NG?[2J' in r, repr(r)
    assert_chat_works(*bystanders)


def test_invalid_utf8(server, bystanders):
    a = server.client("alice")
    a.join("lobby")
    a.send_raw(b"SAY lobby bad \xff\xfe bytes\n")
    expect_err(a.reply(), "invalid_utf8")
    a.send_raw(b"SAY lobby truncated \xe2\x82\n")
    expect_err(a.reply(), "invalid_utf8")
    # Nothing was published and the connection still works.
    assert_chat_works(a, bystanders[0])
    assert not any("bytes" in l or "truncated" in l for l in bystanders[1].drain(0.3))
    assert_chat_works(*bystanders)


def test_line_too_long(server, bystanders):
    a = server.client("alice")
    a.join("lobby")
    a.send_raw(b"SAY lobby " + b"x" * (40 * 1024) + b"\n")
    expect_err(a.reply(timeout=15), "line_too_long")
    # The line was discarded (nothing after it is misparsed) and the connection works.
    a.ping("after-long-line")
    assert_chat_works(a, bystanders[0])
    b_lines = bystanders[0].drain(0.3)
    assert not any("xxxxxxxx" in l for l in b_lines)
    assert_chat_works(*bystanders)


def test_line_at_the_limit_is_accepted(server, bystanders):
    b, c = bystanders
    # Exactly max_line_bytes (16384) bytes without the line ending, body under max_body_bytes.
    line = "SAY lobby "
    body = "y" * (16384 - len(line))
    seq = b.say("lobby", body, timeout=15)
    m = c.expect_msg("lobby", user="bob", timeout=15)
    assert m.seq == seq and m.text == body


def test_wrong_password_three_times_closes(server, bystanders):
    x = server.client()
    expect_err(x.cmd("AUTH alice wrong-1"), "auth_failed")
    expect_err(x.cmd("AUTH nosuchuser whatever"), "auth_failed")
    expect_err(x.cmd("AUTH alice wrong-3"), "auth_failed")
    x.read_until_closed(timeout=10)
    assert_chat_works(*bystanders)


def test_wrong_password_then_right_one(server, bystanders):
    x = server.client()
    expect_err(x.cmd("AUTH alice wrong"), "auth_failed")
    x.auth("alice", "alice-pw")
    # Passwords are case-sensitive, user names are not.
    y = server.client()
    expect_err(y.cmd("AUTH alice ALICE-PW"), "auth_failed")
    assert y.cmd("AUTH ALICE alice-pw") == "OK AUTH alice"
    assert_chat_works(*bystanders)


def test_not_joined_and_invalid_room(server, bystanders):
    a = server.client("alice")
    expect_err(a.cmd("SAY lobby not a member"), "not_joined")
    expect_err(a.cmd("PART lobby"), "not_joined")
    expect_err(a.cmd("JOIN bad!room"), "invalid_room")
    expect_err(a.cmd("JOIN " + "r" * 65), "invalid_room")
    expect_err(a.cmd("SAY bad!room text"), "invalid_room")
    assert not any("not a member" in l for l in bystanders[1].drain(0.3))
    # Room names are lower-cased.
    a.send("JOIN LOBBY")
    r = a.reply()
    assert re.fullmatch(r"OK JOIN lobby \d+", r), r
    assert_chat_works(a, bystanders[0])
    assert_chat_works(*bystanders)


@pytest.mark.server_config(limits={"max_body_bytes": 1000})
def test_body_limits(server, bystanders):
    a = server.client("alice")
    a.join("lobby")
    expect_err(a.cmd("SAY lobby " + "z" * 1001), "body_too_large")
    a.say("lobby", "z" * 1000)
    a.send_raw(b"SAY lobby bell \x07 here\n")
    expect_err(a.reply(), "invalid_body")
    assert_chat_works(a, bystanders[0])
    assert_chat_works(*bystanders)


@pytest.mark.server_config(line={"rate_per_second": 5, "rate_burst": 5})
def test_flood_is_refused_then_disconnected(server):
    b = server.client("bob")
    c = server.client("carol")
    b.join("lobby")
    c.join("lobby")

    a = server.client("alice")
    codes = []
    closed = False
    # Pipelined batches so the refused lines come "in a row" even on a slow machine.
    for batch in range(20):
        try:
            a.send_raw("".join(f"PING {batch}-{i}\n" for i in range(20)).encode())
        except OSError:
            closed = True
            break
        for i in range(20):
            try:
                r = a.reply(timeout=10)
            except AssertionError:
                closed = True
                break
            if r.startswith("ERR"):
                codes.append(r.split()[1])
                if r.startswith("ERR flood"):
                    break
            else:
                assert r == f"PONG {batch}-{i}", r
                codes.append("pong")
        if closed or (codes and codes[-1] == "flood"):
            break
    assert "rate_limited" in codes, codes
    assert codes[-1] == "flood", codes
    assert set(codes[:-1]) <= {"rate_limited", "pong"}, codes
    # ERR flood comes after rate_burst (5) refused lines in a row.
    run = len(codes) - 1 - max((i for i, c in enumerate(codes[:-1]) if c == "pong"), default=-1) - 1
    assert run == 5, f"{run} rate_limited lines in a row before flood: {codes}"
    if not closed:
        a.read_until_closed(timeout=10)
    # Others are unaffected.
    assert_chat_works(b, c)
    assert_chat_works(c, b)


@pytest.mark.server_config(line={"rate_per_second": 5, "rate_burst": 5})
def test_flood_goodbye_reaches_a_client_that_keeps_sending(server):
    """A flooder that never stops to read still gets `ERR flood` and an orderly close: the
    server shuts its side and drains, rather than a reset that would discard the ERR."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        x = send_while_reading(s, b"PING x\n" * 150_000, timeout=30)
    finally:
        s.close()
    lines = x.received.decode().splitlines()
    assert x.eof, f"not closed; last lines {lines[-3:]}"
    assert not x.reset, f"connection reset; last lines {lines[-3:]}"
    assert lines and lines[-1].startswith("ERR flood"), lines[-3:]


@pytest.mark.server_config(line={"idle_timeout_seconds": 2})
def test_idle_timeout(server):
    idle = server.client("alice")
    idle_unauth = server.client()
    keep = server.client("bob")
    deadline = time.monotonic() + 5
    # PING keeps a connection alive.
    while time.monotonic() < deadline:
        keep.ping("keepalive")
        time.sleep(0.5)
    lines = idle.read_until_closed(timeout=20)
    assert any(l.startswith("ERR idle_timeout") for l in lines), lines
    lines = idle_unauth.read_until_closed(timeout=20)
    assert any(l.startswith("ERR idle_timeout") for l in lines), lines
    keep.ping("still-here")


@pytest.mark.server_config(line={"max_connections": 3})
def test_max_connections(server):
    time.sleep(0.5)  # let the readiness probe's connection close on the server side
    a = server.client("alice")
    b = server.client("bob")
    c = server.client("carol")
    a.join("lobby")
    b.join("lobby")
    fourth = server.client()
    lines = fourth.read_until_closed(timeout=10)
    assert lines and lines[0].startswith("ERR too_many_connections"), lines
    # The three others are unaffected.
    assert_chat_works(a, b)
    c.ping()
    # After one leaves there is room again.
    c.close()
    deadline = time.monotonic() + 15
    while True:
        d = server.client()
        try:
            d.send("PING again")
            r = d.next_line(timeout=5)
        except (AssertionError, OSError) as e:
            r = str(e)
        if r == "PONG again":
            break
        d.close()
        assert time.monotonic() < deadline, f"no room after a connection closed: {r}"
        time.sleep(0.3)
    d.auth("carol", "carol-pw")
    assert_chat_works(b, a)


@pytest.mark.server_config(limits={"max_rooms_per_session": 3})
def test_too_many_rooms(server, bystanders):
    a = server.client("alice")
    for room in ("r1", "r2", "r3"):
        a.join(room)
    expect_err(a.cmd("JOIN r4"), "too_many_rooms")
    # Rejoining one it is already in is fine; parting makes room for another.
    a.join("r1")
    assert a.cmd("PART r2") == "OK PART r2"
    a.join("r4")
    assert_chat_works(*bystanders)

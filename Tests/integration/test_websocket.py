"""The WebSocket JSON protocol (protocols/websocket.md) against the real binary: auth, delivery
across protocols, order, resume, dedup, history, typing, direct messages, bad input, limits,
slow consumers and shutdown."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time

import pytest

import openapi_check as oc
from swb import USERS, now_ms, parse_msg
from wsclient import RawWS, WSClient, ws_client

ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def rest_token(server, user: str) -> str:
    r = oc.call(server.http_url, "POST", "/api/v1/token", {"user": user, "password": USERS[user]})
    assert r.status == 200, r
    return r.body["token"]


def rest_messages(server, room: str, query: str = "", user: str = "alice") -> list[dict]:
    r = oc.call(server.http_url, "GET", f"/api/v1/rooms/{room}/messages{query}", token=rest_token(server, user))
    assert r.status == 200, r
    return r.body["envelopes"]


def check_ack(frame: dict, room: str, client_id: str | None) -> dict:
    assert frame["op"] == "ack", frame
    ack = {k: v for k, v in frame.items() if k != "op"}
    oc.validate_schema("Ack", ack, f"ack frame {frame}")
    assert ack["room"] == room and ULID.match(ack["id"]), frame
    if client_id is None:
        assert "client_id" not in ack, frame
    else:
        assert ack["client_id"] == client_id, frame
    return ack


def check_envelope(env: dict) -> dict:
    oc.validate_schema("Envelope", env, "envelope")
    return env


def error_field_problems(err: dict, **fields) -> list[str]:
    """websocket.md: an error carries `request` (the op it answers) and the request's
    `room` / `client_id`. Returns what is missing or wrong, so a test can check everything else
    first and report these together at the end."""
    return [f"{err.get('code')}: {k}={err.get(k)!r}, expected {v!r}" for k, v in fields.items() if err.get(k) != v]


# --------------------------------------------------------------------------------------------
# Authentication


def test_auth_with_password(server):
    c = WSClient(server.ws_url)
    c.send({"op": "auth", "user": "alice", "password": "alice-pw"})
    assert c.next_reply() == {"op": "authenticated", "user": "alice"}
    c.ping()
    # a second auth on a logged-in connection
    c.send({"op": "auth", "user": "bob", "password": "bob-pw"})
    err = c.expect_error("already_authenticated")
    assert err.get("request") == "auth", err
    c.ping()


def test_auth_with_token_from_rest(server):
    token = rest_token(server, "bob")
    c = WSClient(server.ws_url)
    c.login_token(token, "bob")
    c.join("lobby")
    line = server.client("alice")
    line.join("lobby")
    ack = check_ack(c.say("lobby", "via token", client_id="t-1"), "lobby", "t-1")
    m = line.expect_msg("lobby", "via token", user="bob")
    assert (m.seq, m.via) == (ack["seq"], "ws")


def test_auth_failures(server):
    c = WSClient(server.ws_url)
    c.send({"op": "auth", "user": "alice", "password": "wrong"})
    c.expect_error("auth_failed")
    c.send({"op": "auth", "token": "not-a-token"})
    c.expect_error("auth_failed")
    c.send({"op": "auth", "user": "nobody", "password": "x"})
    frames, code = c.read_until_closed(timeout=10)
    assert any(f.get("op") == "error" and f.get("code") == "auth_failed" for f in frames), frames

    # a failure, then the right password, works
    d = WSClient(server.ws_url)
    d.send({"op": "auth", "user": "alice", "password": "nope"})
    d.expect_error("auth_failed")
    d.login("alice")


def test_ops_before_auth_are_refused(server):
    c = WSClient(server.ws_url)
    problems = []
    c.send({"op": "join", "room": "lobby"})
    problems += error_field_problems(c.expect_error("auth_required"), request="join", room="lobby")
    c.send({"op": "send", "room": "lobby", "body": "sneaky", "client_id": "s-1"})
    problems += error_field_problems(c.expect_error("auth_required"), request="send", room="lobby", client_id="s-1")
    c.send({"op": "history", "room": "lobby"})
    problems += error_field_problems(c.expect_error("auth_required"), request="history")
    # Still usable: log in and go.
    c.login("alice")
    c.join("lobby")
    assert "sneaky" not in [e["body"] for e in rest_messages(server, "lobby")]
    assert not problems, problems


# --------------------------------------------------------------------------------------------
# Delivery


def test_ws_to_line_and_line_to_ws(server):
    line = server.client("bob")
    line.join("lobby")
    ws = ws_client(server, "alice")
    ws.join("lobby")

    ack = check_ack(ws.say("lobby", "hello", client_id="x1"), "lobby", "x1")
    line_msg = line.expect(re.compile(r"^MSG lobby \d+ \d+ alice ws hello$"), timeout=10)
    assert line_msg == f"MSG lobby {ack['seq']} {ack['ts']} alice ws hello", (line_msg, ack)
    assert abs(ack["ts"] - now_ms()) < 60_000

    seq = line.say("lobby", "hi from line")
    env = check_envelope(ws.expect_envelope(room="lobby", body="hi from line", timeout=10))
    assert env["from"] == {"user": "bob", "via": "line"}, env
    assert (env["seq"], env["kind"], env["attrs"]) == (seq, "chat", {}), env
    assert "client_id" not in env

    # escapes: a line break from WS arrives escaped on line, and back
    ack2 = ws.say("lobby", "two\nlines \\ end")
    m = line.expect_msg("lobby", user="alice")
    assert (m.seq, m.text) == (ack2["seq"], "two\\nlines \\\\ end")


def test_ack_and_echo_rules(server):
    a1 = ws_client(server, "alice", name="alice-1")
    a2 = ws_client(server, "alice", name="alice-2")
    b = ws_client(server, "bob")
    for c in (a1, a2, b):
        c.join("lobby")

    a1.send({"op": "send", "room": "lobby", "body": "echo test", "client_id": "c-17", "attrs": {"reply_to": "x"}})
    ack = check_ack(a1.expect("ack", client_id="c-17"), "lobby", "c-17")

    for other in (a2, b):
        env = check_envelope(other.expect_envelope(id=ack["id"], timeout=10))
        assert (env["room"], env["seq"], env["ts"], env["body"], env["client_id"]) == \
            ("lobby", ack["seq"], ack["ts"], "echo test", "c-17"), env
        assert env["from"] == {"user": "alice", "via": "ws"} and env["attrs"] == {"reply_to": "x"}, env

    # The sending connection does not get it back: everything up to bob's next message.
    b_ack = b.say("lobby", "sentinel")
    got = []
    while True:
        f = a1.recv(timeout=10)
        got.append(f)
        if f.get("op") == "envelope" and f["envelope"]["id"] == b_ack["id"]:
            break
    assert not any(f.get("op") == "envelope" and f["envelope"]["id"] == ack["id"] for f in got), got
    assert b_ack["seq"] == ack["seq"] + 1

    # Without client_id the ack has none.
    a1.send({"op": "send", "room": "lobby", "body": "no client id"})
    check_ack(a1.expect("ack"), "lobby", None)


def test_order_with_three_interleaved_senders(server):
    N = 50
    reader_ws = ws_client(server, "alice", name="reader-ws", timeout=30)
    reader_ws.join("lobby")
    reader_line = server.client("bob", name="reader-line", timeout=30)
    reader_line.join("lobby")
    s1 = ws_client(server, "alice", name="s1", timeout=30)
    s2 = ws_client(server, "bob", name="s2", timeout=30)
    s3 = server.client("carol", name="s3", timeout=30)
    s1.join("lobby")
    s2.join("lobby")
    s3.join("lobby")
    envs = rest_messages(server, "lobby", "?limit=1")
    base = envs[-1]["seq"]

    for i in range(N):
        s1.send({"op": "send", "room": "lobby", "body": f"s1 {i}", "client_id": f"s1-{i}"})
        s2.send({"op": "send", "room": "lobby", "body": f"s2 {i}", "client_id": f"s2-{i}"})
        s3.send(f"SAY lobby s3 {i}")
    expected = list(range(base + 1, base + 3 * N + 1))

    def ws_collect(c: WSClient, own: str | None) -> tuple[list[int], dict[int, str], list[int]]:
        """(received seqs in arrival order, seq -> body, own ack seqs in arrival order)."""
        seen, bodies, acks = [], {}, []
        want_env = 3 * N - (N if own else 0)
        deadline = time.monotonic() + 60
        while len(seen) < want_env or (own and len(acks) < N):
            f = c.recv(timeout=max(0.1, deadline - time.monotonic()))
            if f["op"] == "envelope" and f["envelope"]["room"] == "lobby" and f["envelope"]["seq"] > base:
                e = f["envelope"]
                seen.append(e["seq"])
                bodies[e["seq"]] = e["body"]
            elif f["op"] == "ack":
                assert f["client_id"] == f"{own}-{len(acks)}", f"{c.name}: acks out of order: {f}"
                acks.append(f["seq"])
                bodies[f["seq"]] = f"{own} {len(acks) - 1}"
            elif f["op"] == "error":
                raise AssertionError(f"{c.name}: {f}")
        return seen, bodies, acks

    def line_collect(c, own: bool) -> tuple[list[int], dict[int, str], list[int]]:
        seen, bodies, acks = [], {}, []
        want = 3 * N - (N if own else 0)
        while len(seen) < want or (own and len(acks) < N):
            line = c.next_line(timeout=30)
            if line.startswith("MSG lobby ") and parse_msg(line).seq > base:
                m = parse_msg(line)
                seen.append(m.seq)
                bodies[m.seq] = m.text
            elif line.startswith("OK SAY "):
                acks.append(int(line.split()[2]))
                bodies[acks[-1]] = f"s3 {len(acks) - 1}"
            elif line.startswith("ERR"):
                raise AssertionError(f"{c.name}: {line}")
        return seen, bodies, acks

    results = {
        "reader-ws": ws_collect(reader_ws, None),
        "reader-line": line_collect(reader_line, False),
        "s1": ws_collect(s1, "s1"),
        "s2": ws_collect(s2, "s2"),
        "s3": line_collect(s3, True),
    }
    history = {e["seq"]: e["body"] for e in rest_messages(server, "lobby", f"?after={base}&limit=500")}
    assert sorted(history) == expected, f"history seqs {sorted(history)}"
    for name, (seen, bodies, acks) in results.items():
        assert seen == sorted(seen) and len(set(seen)) == len(seen), f"{name}: not strictly increasing: {seen}"
        assert acks == sorted(acks), f"{name}: acks not increasing: {acks}"
        assert sorted(seen + acks) == expected, f"{name}: gaps or duplicates: seen={seen} acks={acks}"
        assert bodies == history, f"{name}: different content than history"
    # each sender's messages are in the order it sent them
    for s in ("s1", "s2", "s3"):
        mine = [history[q] for q in expected if history[q].startswith(s + " ")]
        assert mine == [f"{s} {i}" for i in range(N)], mine


def test_join_since_resumes_without_gap_or_duplicate(server):
    a = ws_client(server, "alice", name="alice")
    a.join("lobby")
    b = ws_client(server, "bob")
    b.join("lobby")
    c = server.client("carol")
    c.join("lobby")
    a.expect_envelope(kind="join", user="carol")
    last = a.say("lobby", "before the break")["seq"]
    a.close()

    sent = []
    for i in range(10):
        b.say("lobby", f"missed ws {i}")
        sent.append(f"missed ws {i}")
        c.say("lobby", f"missed line {i}")
        sent.append(f"missed line {i}")

    a2 = ws_client(server, "alice", name="alice-again")
    joined, replay = a2.join("lobby", since=last)
    seqs = [e["seq"] for e in replay]
    assert seqs == list(range(last + 1, joined["seq"] + 1)), f"replay seqs {seqs}, joined {joined}"
    assert [e["body"] for e in replay if e["kind"] == "chat"] == sent
    for e in replay:
        check_envelope(e)
    # exactly what history holds for that range
    assert replay == rest_messages(server, "lobby", f"?after={last}&before={joined['seq'] + 1}&limit=500")

    # then live ones, continuing right after `joined`
    live = b.say("lobby", "live again")
    got = []
    while True:
        e = a2.expect_envelope(room="lobby", timeout=10)
        got.append(e)
        if e["id"] == live["id"]:
            break
    assert [e["seq"] for e in got] == list(range(joined["seq"] + 1, live["seq"] + 1)), got


def test_client_id_dedup(server):
    a = ws_client(server, "alice")
    b = ws_client(server, "bob")
    a.join("lobby")
    b.join("lobby")
    first = check_ack(a.say("lobby", "only once", client_id="dup-ws"), "lobby", "dup-ws")
    again = check_ack(a.say("lobby", "only once", client_id="dup-ws"), "lobby", "dup-ws")
    assert (again["id"], again["seq"]) == (first["id"], first["seq"]), (first, again)
    sentinel = a.say("lobby", "sentinel")
    got = []
    while True:
        e = b.expect_envelope(room="lobby", timeout=10)
        got.append(e)
        if e["id"] == sentinel["id"]:
            break
    assert [e["seq"] for e in got if e.get("client_id") == "dup-ws"] == [first["seq"]], got
    assert sentinel["seq"] == first["seq"] + 1
    hist = [e for e in rest_messages(server, "lobby", "?limit=500") if e.get("client_id") == "dup-ws"]
    assert len(hist) == 1 and hist[0]["id"] == first["id"], hist


def test_history_op_matches_rest(server):
    a = ws_client(server, "alice")
    a.join("lobby")
    acks = [a.say("lobby", f"h {i}") for i in range(30)]

    def ws_history(**kw) -> list[dict]:
        a.send({"op": "history", "room": "lobby", **kw})
        f = a.expect("history", room="lobby")
        for e in f["envelopes"]:
            check_envelope(e)
        return f["envelopes"]

    cases = [
        ({}, ""),
        ({"limit": 5}, "?limit=5"),
        ({"before": acks[20]["seq"], "limit": 7}, f"?before={acks[20]['seq']}&limit=7"),
        ({"before": acks[2]["seq"]}, f"?before={acks[2]['seq']}"),
        ({"limit": 500}, "?limit=500"),
    ]
    for kw, query in cases:
        ws = ws_history(**kw)
        rest = rest_messages(server, "lobby", query)
        assert ws == rest, f"history {kw} != GET messages{query}"
        assert ws, kw
    page = ws_history(before=acks[20]["seq"], limit=7)
    assert [e["seq"] for e in page] == [x["seq"] for x in acks[13:20]]
    assert [e["body"] for e in page] == [f"h {i}" for i in range(13, 20)]

    a.send({"op": "history", "room": "lobby", "limit": 0})
    a.expect_error("bad_request", request="history")
    a.send({"op": "history", "room": "lobby", "limit": 501})
    a.expect_error("bad_request", request="history")


def test_typing_is_live_only(server):
    a = ws_client(server, "alice")
    b = ws_client(server, "bob")
    line = server.client("carol")
    for c in (a, b):
        c.join("lobby")
    line.join("lobby")
    a.send({"op": "typing", "room": "lobby"})
    env = check_envelope(b.expect_envelope(kind="typing", timeout=10))
    assert (env["room"], env["seq"], env["from"]["user"], env["from"]["via"]) == ("lobby", 0, "alice", "ws"), env
    ack = a.say("lobby", "after typing")
    line_lines = line.lines_until(re.compile(r"^MSG lobby \d+ \d+ alice ws after typing$"))
    assert not [l for l in line_lines[:-1] if l.startswith("MSG")], f"line client got the typing: {line_lines}"
    assert not [f for f in a.drain(0.3) if f.get("op") == "envelope" and f["envelope"]["kind"] == "typing"]
    kinds = [e["kind"] for e in rest_messages(server, "lobby", "?limit=500")]
    assert "typing" not in kinds
    assert ack["seq"] == max(e["seq"] for e in rest_messages(server, "lobby", "?limit=500"))


def test_direct_message(server):
    a = ws_client(server, "alice")
    b = ws_client(server, "bob")
    b_line = server.client("bob")
    carol = ws_client(server, "carol")

    a.send({"op": "send", "to": "bob", "body": "psst", "client_id": "dm-1"})
    ack = check_ack(a.expect("ack", client_id="dm-1"), "dm.alice.bob", "dm-1")
    env = check_envelope(b.expect_envelope(room="dm.alice.bob", timeout=10))
    assert (env["id"], env["seq"], env["body"], env["from"]) == (ack["id"], ack["seq"], "psst", {"user": "alice", "via": "ws"})
    m = b_line.expect(re.compile(r"^MSG dm\.alice\.bob "), timeout=10)
    assert m == f"MSG dm.alice.bob {ack['seq']} {ack['ts']} alice ws psst", m

    # and back, from line
    seq = b_line.tell("alice", "hi alice")
    env = a.expect_envelope(room="dm.alice.bob", body="hi alice", timeout=10)
    assert (env["seq"], env["from"]) == (seq, {"user": "bob", "via": "line"})
    b.expect_envelope(room="dm.alice.bob", body="hi alice", timeout=10)  # bob's other session

    # carol sees none of it
    carol.ping()
    assert not [f for f in carol.drain(0.5) if f.get("op") == "envelope"]
    carol.send({"op": "history", "room": "dm.alice.bob"})
    carol.expect_error("forbidden")
    carol.send({"op": "join", "room": "dm.alice.bob"})
    err = carol.expect("error")
    assert err["code"] in ("forbidden", "direct_room"), err

    a.send({"op": "send", "to": "zed", "body": "hello?", "client_id": "dm-2"})
    a.expect_error("no_such_user", client_id="dm-2")
    a.send({"op": "send", "to": "Not.A.User", "body": "hello?", "client_id": "dm-3"})
    a.expect_error("invalid_user", client_id="dm-3")


def test_leave_and_occupants(server):
    a = ws_client(server, "alice")
    b = ws_client(server, "bob")
    line = server.client("carol")
    line.join("lobby")
    a.join("lobby")
    occ = a.expect("occupants", room="lobby")
    assert {"user": "alice", "via": "ws"} in occ["occupants"] and {"user": "carol", "via": "line"} in occ["occupants"], occ
    b.join("lobby")
    a.expect_envelope(kind="join", user="bob", via="ws", timeout=10)
    line.expect("JOINED lobby bob ws")
    b.send({"op": "occupants", "room": "lobby"})
    occ = b.expect("occupants", room="lobby")
    assert sorted((o["user"], o["via"]) for o in occ["occupants"]) == [("alice", "ws"), ("bob", "ws"), ("carol", "line")], occ

    b.send({"op": "leave", "room": "lobby"})
    assert b.expect("left", room="lobby") == {"op": "left", "room": "lobby"}
    env = check_envelope(a.expect_envelope(kind="leave", user="bob", timeout=10))
    assert env["from"]["via"] == "ws" and env["seq"] > 0
    line.expect("PARTED lobby bob ws")
    # bob no longer receives the room
    ack = a.say("lobby", "after leave")
    line.expect_msg("lobby", "after leave")
    b.ping()
    assert not [f for f in b.drain(0.3) if f.get("op") == "envelope" and f["envelope"]["id"] == ack["id"]]


def test_room_limits(make_server):
    server = make_server(rooms={"auto_create": False}, limits={"max_rooms_per_session": 2})
    for room in ("r1", "r2", "r3"):
        r = server.cli("room", "create", room)
        assert r.returncode == 0, r.stderr
    a = ws_client(server, "alice")
    problems = []
    a.send({"op": "join", "room": "nowhere"})
    problems += error_field_problems(a.expect_error("no_such_room"), request="join", room="nowhere")
    a.join("r1")
    a.join("r2")
    a.send({"op": "join", "room": "r3"})
    problems += error_field_problems(a.expect_error("too_many_rooms"), request="join", room="r3")
    a.join("r1")  # joining twice is harmless
    a.send({"op": "leave", "room": "r3"})
    problems += error_field_problems(a.expect_error("not_joined"), request="leave", room="r3")
    assert not problems, problems


def test_frame_bigger_than_max_frame_bytes_closes_1009(make_server):
    server = make_server(websocket={"max_frame_bytes": 4096, "max_message_bytes": 2048})
    with Chatter(server) as chat:
        big = ws_client(server, "carol", name="big")
        big.send_text(json.dumps({"op": "send", "room": "lobby", "body": "z" * 10000}))
        frames, code = big.read_until_closed(timeout=10)
        assert code == 1009, f"close code {code}, frames {frames}"
        chat.check()


# --------------------------------------------------------------------------------------------
# Bad input, while others keep chatting


class Chatter:
    """alice (ws) keeps sending to the room; bob (ws) checks that each message arrives as the next
    chat envelope from alice. Both also ping, so idle timeouts do not hit them."""

    def __init__(self, server, room: str = "lobby", period: float = 0.2):
        self.room, self.period = room, period
        self.sender = ws_client(server, "alice", name="chat-sender", timeout=15)
        self.receiver = ws_client(server, "bob", name="chat-receiver", timeout=15)
        self.sender.join(room)
        self.receiver.join(room)
        self.rounds = 0
        self.seqs: list[int] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            i = 0
            while not self._stop.is_set():
                body = f"chatter {i}"
                ack = self.sender.say(self.room, body, timeout=10)
                env = self.receiver.expect_envelope(room=self.room, user="alice", kind="chat", timeout=10)
                assert (env["id"], env["body"]) == (ack["id"], body), f"expected {body} ({ack}), got {env}"
                self.receiver.ping(timeout=10)
                self.seqs.append(ack["seq"])
                self.rounds += 1
                i += 1
                self._stop.wait(self.period)
        except BaseException as e:  # noqa: BLE001
            self.errors.append(e)

    def __enter__(self) -> "Chatter":
        self._thread.start()
        self.check(1)
        return self

    def check(self, more: int = 2, timeout: float = 20) -> None:
        """Waits until `more` further rounds went through; fails on any error."""
        target = self.rounds + more
        deadline = time.monotonic() + timeout
        while self.rounds < target and not self.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.errors:
            raise self.errors[0]
        assert self.rounds >= target, f"the other pair stalled: {self.rounds} rounds, wanted {target}"

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(25)
        if exc[0] is None:
            if self.errors:
                raise self.errors[0]
            assert not self._thread.is_alive(), "chatter did not stop"
            assert self.seqs == sorted(self.seqs) and len(set(self.seqs)) == len(self.seqs), self.seqs


BAD_INPUT_CONFIG = {"websocket": {"max_message_bytes": 1024}, "limits": {"max_body_bytes": 256}}

BAD_INPUTS = {
    # name: (what to send, expected code, fields the error must carry)
    "non_json_text": ("text:hello there", "invalid_json", {}),
    "truncated_json": ('text:{"op": "send", "room": ', "invalid_json", {}),
    "json_array": ('text:["send", "lobby"]', "invalid_json", {}),
    "json_string": ('text:"ping"', "invalid_json", {}),
    "binary_frame": (b'{"op":"ping"}', "binary_not_supported", {}),
    "unknown_op": ({"op": "dance", "room": "lobby"}, "unknown_op", {"request": "dance"}),
    "missing_room": ({"op": "send", "body": "where to?", "client_id": "m-1"}, "bad_request",
                     {"request": "send", "client_id": "m-1"}),
    "body_not_string": ({"op": "send", "room": "lobby", "body": 5, "client_id": "m-2"}, "bad_request",
                        {"request": "send", "client_id": "m-2"}),
    "invalid_room_join": ({"op": "join", "room": "Bad Room!"}, "invalid_room", {"request": "join"}),
    "invalid_room_send": ({"op": "send", "room": "x" * 65, "body": "hi"}, "invalid_room", {"request": "send"}),
    "oversize_message": ({"op": "send", "room": "lobby", "body": "o" * 2000}, "message_too_large", {}),
    "body_too_large": ({"op": "send", "room": "lobby", "body": "b" * 300, "client_id": "big-1"}, "body_too_large",
                       {"request": "send", "room": "lobby", "client_id": "big-1"}),
    "invalid_body": ({"op": "send", "room": "lobby", "body": "bell \u0007", "client_id": "c-1"}, "invalid_body",
                     {"request": "send", "client_id": "c-1"}),
    "invalid_kind": ({"op": "send", "room": "lobby", "body": "k", "kind": "join", "client_id": "k-1"}, "invalid_kind",
                     {"request": "send", "client_id": "k-1"}),
    "invalid_attrs": ({"op": "send", "room": "lobby", "body": "a", "attrs": {"Bad Key": "v"}, "client_id": "a-1"},
                      "invalid_attrs", {"request": "send", "client_id": "a-1"}),
    "invalid_client_id": ({"op": "send", "room": "lobby", "body": "c", "client_id": "has space"}, "invalid_client_id",
                          {"request": "send"}),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_error_and_room_keeps_going(make_server, case):
    server = make_server(**BAD_INPUT_CONFIG)
    payload, code, fields = BAD_INPUTS[case]
    with Chatter(server) as chat:
        bad = ws_client(server, "carol", name="bad")
        bad.join("lobby")
        for _ in range(2):  # twice: the connection survives the first one
            if isinstance(payload, bytes):
                bad.send_bytes(payload)
            elif isinstance(payload, str):
                bad.send_text(payload.removeprefix("text:"))
            else:
                bad.send(payload)
            err = bad.expect_error(code, timeout=10)
            problems = error_field_problems(err, **fields)
            chat.check()
        # the connection is kept and works
        bad.ping()
        ack = bad.say("lobby", "still here")
        assert ack["seq"] > chat.seqs[0]
        chat.check()
    # nothing of the bad input was published
    bodies = [e["body"] for e in rest_messages(server, "lobby", "?limit=500")]
    assert not [b for b in bodies if b.startswith(("o" * 100, "b" * 100, "where to", "bell"))], bodies
    assert "still here" in bodies
    assert not problems, problems


def test_rate_limit_then_flood(make_server):
    server = make_server(websocket={"rate_per_second": 5, "rate_burst": 5})
    with Chatter(server, period=0.5) as chat:
        bad = ws_client(server, "carol", name="burster")
        time.sleep(1.2)  # let the bucket fill up again after auth
        for _ in range(8):
            bad.send({"op": "ping"})
        frames = []
        while len(frames) < 8:
            frames.append(bad.recv(timeout=10))
        limited = [f for f in frames if f.get("op") == "error" and f.get("code") == "rate_limited"]
        pongs = [f for f in frames if f.get("op") == "pong"]
        assert limited and pongs and len(limited) + len(pongs) == 8, frames
        chat.check()
        time.sleep(1.2)
        bad.ping()  # kept

        # keep bursting: flood, and the connection is closed with 1008
        for _ in range(60):
            try:
                bad.send({"op": "ping"})
            except Exception:  # noqa: BLE001 - the server may close before we are done
                break
        frames, code = bad.read_until_closed(timeout=10)
        assert any(f.get("op") == "error" and f.get("code") == "flood" for f in frames), frames
        assert code == 1008, f"close code {code}"
        chat.check()


def test_idle_timeout(make_server):
    server = make_server(websocket={"idle_timeout_seconds": 2})
    with Chatter(server, period=0.2) as chat:
        idle = ws_client(server, "carol", name="idle")
        idle.join("lobby")
        start = time.monotonic()
        frames, code = idle.read_until_closed(timeout=15)
        elapsed = time.monotonic() - start
        errors = [f for f in frames if f.get("op") == "error"]
        assert [e["code"] for e in errors] == ["idle_timeout"], frames
        assert code == 1000, f"close code {code}"
        assert elapsed > 1.0, f"closed after {elapsed:.1f}s, idle_timeout_seconds is 2"
        chat.check()
    # the idle user's leave was published (read after the chatter thread stopped using the receiver)
    chat.receiver.expect_envelope(kind="leave", user="carol", timeout=10)


def test_oversize_frame_limit_is_configurable(make_server):
    """max_message_bytes applies to the JSON text; a message just below passes."""
    server = make_server(websocket={"max_message_bytes": 1024})
    a = ws_client(server, "alice")
    a.join("lobby")
    body = "x" * (1024 - len(json.dumps({"op": "send", "room": "lobby", "body": "", "client_id": "fit"})))
    a.say("lobby", body, client_id="fit")
    a.send({"op": "send", "room": "lobby", "body": body + "xx", "client_id": "nofit"})
    a.expect_error("message_too_large")


# --------------------------------------------------------------------------------------------
# Slow consumer

COUNT = 5000
BODY = 3000
WINDOW = 16


def test_slow_consumer_is_dropped_room_keeps_going(make_server):
    server = make_server(limits={"session_queue": 64},
                         websocket={"rate_per_second": 1_000_000, "rate_burst": 1_000_000})
    reader = ws_client(server, "bob", name="reader", timeout=60)
    reader.join("lobby")
    slow = RawWS("127.0.0.1", server.ws_port, rcvbuf=4096, timeout=10)
    slow.send_json({"op": "auth", "user": "carol", "password": "carol-pw"})
    assert slow.recv_json() == {"op": "authenticated", "user": "carol"}
    slow.send_json({"op": "join", "room": "lobby"})
    while slow.recv_json().get("op") != "joined":
        pass
    # carol stops reading now
    sender = ws_client(server, "alice", name="sender", timeout=60)
    sender.join("lobby")
    reader.ping()

    body = "b" * BODY
    received: list[dict] = []
    others: list[dict] = []
    errors: list[BaseException] = []

    def read_all():
        try:
            while len(received) < COUNT:
                f = reader.recv(timeout=60)
                if f["op"] == "envelope" and f["envelope"]["kind"] == "chat":
                    received.append(f["envelope"])
                elif f["op"] == "error":
                    raise AssertionError(f"reader got {f}")
                else:
                    others.append(f)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=read_all, daemon=True)
    t.start()
    acks: list[int] = []
    sent = 0
    while len(acks) < COUNT and not errors:
        while sent < COUNT and sent - len(acks) < WINDOW:
            sender.send({"op": "send", "room": "lobby", "body": f"{sent} {body}", "client_id": f"m{sent}"})
            sent += 1
        f = sender.first(lambda x: x.get("op") in ("ack", "error"), "an ack", timeout=60)
        assert f["op"] == "ack" and f["client_id"] == f"m{len(acks)}", f"after {len(acks)} acks: {f}"
        acks.append(f["seq"])
    t.join(120)
    if errors:
        raise errors[0]
    assert not t.is_alive(), f"reader got only {len(received)} of {COUNT}"

    assert len(acks) == COUNT and acks == sorted(acks) and len(set(acks)) == COUNT
    assert [e["seq"] for e in received] == acks
    for i, e in enumerate(received):
        assert e["body"] == f"{i} {body}" and e["from"]["user"] == "alice", f"message {i}: {e['body'][:40]!r}"

    # the slow one was disconnected and did not get everything
    frames, closed = slow.read_until_closed(timeout=60)
    assert closed, "the slow consumer is still connected"
    texts = [json.loads(p) for op, p in frames if op == 0x1]
    chats = [f for f in texts if f.get("op") == "envelope" and f["envelope"]["kind"] == "chat"]
    assert len(chats) < COUNT, "the slow client received everything and was not disconnected"
    # its leave was published
    if not any(f.get("op") == "envelope" and f["envelope"]["kind"] == "leave"
               and f["envelope"]["from"]["user"] == "carol" for f in others):
        reader.expect_envelope(kind="leave", user="carol", timeout=30)
    # and counted
    r = oc.call(server.http_url, "GET", "/metrics")
    m = re.search(r"^switchboard_slow_consumers_total(?:\{[^}]*\})? (\S+)", r.text, re.M)
    assert m and float(m.group(1)) >= 1, "switchboard_slow_consumers_total not counted"


# --------------------------------------------------------------------------------------------
# Shutdown

EXIT_DEADLINE = 8.0


def test_sigterm_says_goodbye(server):
    a = ws_client(server, "alice")
    a.join("lobby")
    b = ws_client(server, "bob")
    b.join("lobby")
    unauth = WSClient(server.ws_url)
    ack = a.say("lobby", "before shutdown")
    b.expect_envelope(id=ack["id"])

    server.proc.send_signal(signal.SIGTERM)
    for c in (a, b, unauth):
        frames, code = c.read_until_closed(timeout=EXIT_DEADLINE)
        assert any(f.get("op") == "error" and f.get("code") == "shutting_down" for f in frames), (c.name, frames)
        assert code == 1001, f"{c.name}: close code {code}"
    try:
        rc = server.proc.wait(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"switchboard still running {EXIT_DEADLINE}s after SIGTERM") from None
    assert rc == 0, f"exit status {rc}"

    server.start()
    assert ack["id"] in [e["id"] for e in rest_messages(server, "lobby")]


def test_protocol_pings_keep_an_answering_peer_and_close_a_silent_one(make_server):
    """The server pings every `ping_interval_seconds`; a peer that answers stays, one that
    never answers is closed with 1001 after the next interval."""
    server = make_server(websocket={"ping_interval_seconds": 1})
    answering = RawWS("127.0.0.1", server.ws_port, timeout=10)
    silent = RawWS("127.0.0.1", server.ws_port, timeout=10)
    try:
        pings = 0
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            try:
                fr = answering.read_frame(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            assert fr is not None, "the answering peer was closed"
            opcode, payload = fr
            assert opcode == 0x9, f"unexpected frame {fr!r}"
            pings += 1
            answering.send_frame(0xA, payload)
        assert pings >= 3, f"{pings} pings in 4.5 s at an interval of 1 s"
        answering.send_json({"op": "ping"})
        assert answering.recv_json(timeout=5) == {"op": "pong"}

        frames, closed = silent.read_until_closed(timeout=10)
        assert closed, f"a peer that never answered a ping is still open: {frames!r}"
        opcodes = [op for op, _ in frames]
        assert 0x9 in opcodes, frames
        errors = [json.loads(payload) for op, payload in frames if op == 0x1]
        assert [(e.get("op"), e.get("code")) for e in errors] == [("error", "idle_timeout")], frames
        close = [payload for op, payload in frames if op == 0x8]
        assert close and int.from_bytes(close[0][:2], "big") == 1001, frames
    finally:
        answering.close()
        silent.close()


# --------------------------------------------------------------------------------------------
# RFC 6455 framing: fragments, control frames, the closing handshake, refused upgrades


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    close = [payload for op, payload in frames if op == 0x8]
    return int.from_bytes(close[0][:2], "big") if close and len(close[0]) >= 2 else None


def test_fragmented_message_with_a_ping_between_its_fragments(server):
    """A message split over three frames, with a ping between them (RFC 6455 §5.4 allows control
    frames inside a fragmented message): the ping is answered with its own payload, then the
    joined message is run as one request."""
    raw = RawWS("127.0.0.1", server.ws_port, timeout=10)
    try:
        text = json.dumps({"op": "auth", "user": "alice", "password": USERS["alice"]}).encode()
        raw.send_frame(0x1, text[:10], fin=False)
        raw.send_frame(0x9, b"are you there")
        raw.send_frame(0x0, text[10:20], fin=False)
        raw.send_frame(0x0, text[20:], fin=True)
        assert raw.read_frame(timeout=10) == (0xA, b"are you there")
        assert raw.recv_json(timeout=10) == {"op": "authenticated", "user": "alice"}
        raw.send_json({"op": "ping"})
        assert raw.recv_json(timeout=10) == {"op": "pong"}
    finally:
        raw.close()


def send_violation(raw: RawWS, case: str) -> None:
    if case == "continuation_without_start":
        raw.send_frame(0x0, b'{"op":"ping"}')
    elif case == "text_inside_fragmented_message":
        raw.send_frame(0x1, b'{"op":', fin=False)
        raw.send_frame(0x1, b'"ping"}')
    elif case == "reserved_opcode":
        raw.send_frame(0x3, b"?")
    elif case == "reserved_bit":
        raw.send_frame(0x1, b'{"op":"ping"}', rsv=4)
    elif case == "reserved_bit_on_a_ping":
        raw.send_frame(0x9, b"hi", rsv=1)
    elif case == "unmasked_frame":
        raw.send_frame(0x1, b'{"op":"ping"}', masked=False)
    else:
        raise AssertionError(case)


def test_protocol_violations_close_with_1002_while_the_room_keeps_going(server):
    with Chatter(server) as chat:
        for case in ["continuation_without_start", "text_inside_fragmented_message", "reserved_opcode", "reserved_bit",
                     "reserved_bit_on_a_ping", "unmasked_frame"]:
            raw = RawWS("127.0.0.1", server.ws_port, timeout=10)
            try:
                send_violation(raw, case)
                frames, closed = raw.read_until_closed(timeout=10)
                assert closed, f"{case}: still open"
                assert close_code(frames) == 1002, f"{case}: {frames!r}"
                assert not [f for f in frames if f[0] == 0x1], f"{case}: a violation ran as a request: {frames!r}"
            finally:
                raw.close()
        chat.check()


def test_a_text_message_that_is_not_utf8_closes_with_1007(server):
    """RFC 6455 §8.1, also when the bad bytes sit in a field the server would ignore, and when
    a multi-byte character is split across fragments only the whole message counts."""
    raw = RawWS("127.0.0.1", server.ws_port, timeout=10)
    try:
        raw.send_frame(0x1, '{"op":"ping","x":"\u00e9'.encode()[:-1], fin=False)
        raw.send_frame(0x0, '\u00e9"}'.encode()[-3:])
        assert raw.recv_json(timeout=10) == {"op": "pong"}
        raw.send_frame(0x1, b'{"op":"ping","x":"\xff\xfe"}')
        frames, closed = raw.read_until_closed(timeout=10)
        assert closed and close_code(frames) == 1007, frames
        assert not [f for f in frames if f[0] == 0x1], frames
    finally:
        raw.close()


def test_client_initiated_close_is_answered_then_the_connection_ends(server):
    for payload, expected in [(b"\x03\xe8bye", 1000), (b"\x0b\xb8app", 1000), (b"", 1000),
                              (b"\x03\xe7", 1002), (b"\x03\xe8\xff\xfe", 1002)]:
        raw = RawWS("127.0.0.1", server.ws_port, timeout=10)
        try:
            raw.send_json({"op": "ping"})
            assert raw.recv_json(timeout=10) == {"op": "pong"}
            raw.send_frame(0x8, payload)
            frames, closed = raw.read_until_closed(timeout=10)
            assert closed, f"close {payload!r}: the server kept the connection open"
            assert [op for op, _ in frames] == [0x8] and close_code(frames) == expected, (payload, frames)
        finally:
            raw.close()


def raw_handshake(port: int, path: str = "/ws", version: str = "13") -> tuple[int, dict]:
    """Sends a WebSocket upgrade request; returns the status and the JSON body (if any)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": version})
    resp = conn.getresponse()
    body = resp.read() if resp.status != 101 else b""
    conn.close()
    return resp.status, (json.loads(body) if body else {})


def test_refused_upgrades_say_why(make_server):
    """Upgrade requests the server does not take get a JSON error saying why, not a dropped
    connection: a plain GET of /ws (426), another path (404), a malformed handshake (400), too
    many connections (503)."""
    server = make_server(websocket={"max_connections": 2})
    r = oc.call(server.http_url, "GET", "/ws", documented=False)
    assert r.status == 426 and r.body["error"]["code"] == "upgrade_required", r
    status, body = raw_handshake(server.ws_port, "/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found", (status, body)
    status, body = raw_handshake(server.ws_port, "/ws", version="8")
    assert status == 400 and body["error"]["code"] == "bad_request", (status, body)
    r = oc.call(server.http_url, "GET", "/healthz", documented=False)
    assert r.status == 200, r
    first, second = ws_client(server, "alice"), ws_client(server, "bob")
    try:
        status, body = raw_handshake(server.ws_port)
        assert status == 503 and body["error"]["code"] == "too_many_connections", (status, body)
        first.close()
        deadline = time.monotonic() + 10
        while raw_handshake(server.ws_port)[0] != 101:
            assert time.monotonic() < deadline, "a closed connection still counts against max_connections"
            time.sleep(0.1)
    finally:
        first.close()
        second.close()

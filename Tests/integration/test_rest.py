"""The REST API (protocols/rest.md), /healthz and /metrics, against the real binary.

Every HTTP answer goes through openapi_check, which fails on an undocumented status code or a
body that does not match protocols/openapi.yaml.
"""

from __future__ import annotations

import math
import re
import time

import openapi_check as oc
from swb import USERS, now_ms, parse_msg, unique
from wsclient import ws_client


def api(server, method: str, path: str, body=None, token: str | None = None, **kw) -> oc.Response:
    return oc.call(server.http_url, method, path, body, token=token, **kw)


def token_for(server, user: str) -> str:
    r = api(server, "POST", "/api/v1/token", {"user": user, "password": USERS[user]})
    assert r.status == 200, r
    return r.body["token"]


def post(server, token: str, room: str, body: str, **fields) -> oc.Response:
    return api(server, "POST", f"/api/v1/rooms/{room}/messages", {"body": body, **fields}, token=token)


def messages(server, token: str, room: str, query: str = "") -> list[dict]:
    r = api(server, "GET", f"/api/v1/rooms/{room}/messages{query}", token=token)
    assert r.status == 200, r
    assert r.body["room"] == room, r.body
    return r.body["envelopes"]


def assert_error(r: oc.Response, status: int, code: str | tuple) -> None:
    codes = code if isinstance(code, tuple) else (code,)
    assert r.status == status and r.error_code() in codes, f"expected {status} {code}, got {r}"


# --------------------------------------------------------------------------------------------
# Tokens


def test_token_for_good_password(server):
    before = now_ms()
    r = api(server, "POST", "/api/v1/token", {"user": "alice", "password": "alice-pw"})
    assert r.status == 200, r
    assert r.content_type.startswith("application/json"), r.content_type
    assert r.body["user"] == "alice"
    assert r.body["token"]
    # default token_ttl_seconds = 86400
    assert abs(r.body["expires_at"] - (before + 86_400_000)) < 120_000, r.body
    # The token works.
    rooms = api(server, "GET", "/api/v1/rooms", token=r.body["token"])
    assert rooms.status == 200, rooms
    # User names are lower-cased.
    r2 = api(server, "POST", "/api/v1/token", {"user": "Bob", "password": "bob-pw"})
    assert r2.status == 200 and r2.body["user"] == "bob", r2


def test_token_refused(server):
    assert_error(api(server, "POST", "/api/v1/token", {"user": "alice", "password": "wrong"}), 401, "auth_failed")
    assert_error(api(server, "POST", "/api/v1/token", {"user": "nobody", "password": "x"}), 401, "auth_failed")
    assert_error(api(server, "POST", "/api/v1/token", {"user": "alice"}), 400, "bad_request")
    assert_error(api(server, "POST", "/api/v1/token", {"user": "alice", "password": 5}), 400, "bad_request")
    assert_error(api(server, "POST", "/api/v1/token", raw=b'{"user": "alice", '), 400, "invalid_json")


AUTHED = [
    ("GET", "/api/v1/rooms", None),
    ("POST", "/api/v1/rooms", {"name": "secret"}),
    ("DELETE", "/api/v1/rooms/lobby", None),
    ("GET", "/api/v1/rooms/lobby/messages", None),
    ("POST", "/api/v1/rooms/lobby/messages", {"body": "x"}),
    ("GET", "/api/v1/rooms/lobby/occupants", None),
]


def test_missing_and_invalid_token(server):
    good = token_for(server, "alice")
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    for method, path, body in AUTHED:
        r = api(server, method, path, body)
        assert_error(r, 401, "auth_required")
        assert (r.header("WWW-Authenticate") or "").startswith("Bearer"), (method, path, r.headers)
        for bad in ("garbage", forged, ""):
            r = api(server, method, path, body, headers={"Authorization": f"Bearer {bad}"})
            assert r.status == 401 and r.error_code() in (("invalid_token",) if bad else ("invalid_token", "auth_required")), \
                (method, path, bad, r)
            assert (r.header("WWW-Authenticate") or "").startswith("Bearer"), (method, path, r.headers)
    # Nothing was done by the refused requests.
    rooms = api(server, "GET", "/api/v1/rooms", token=good).body["rooms"]
    assert "secret" not in [x["name"] for x in rooms]


def test_expired_token(make_server):
    server = make_server(websocket={"token_ttl_seconds": 1})
    r = api(server, "POST", "/api/v1/token", {"user": "alice", "password": "alice-pw"})
    assert r.status == 200, r
    token, expires_at = r.body["token"], r.body["expires_at"]
    assert abs(expires_at - (now_ms() + 1000)) < 5000, r.body
    # Wait until it has expired (plus a second for clocks with second granularity).
    time.sleep(max(0.0, (expires_at - now_ms()) / 1000) + 1.5)
    r = api(server, "GET", "/api/v1/rooms", token=token)
    assert_error(r, 401, "invalid_token")
    assert (r.header("WWW-Authenticate") or "").startswith("Bearer"), r.headers
    # A fresh one works.
    assert api(server, "GET", "/api/v1/rooms", token=token_for(server, "alice")).status == 200


# --------------------------------------------------------------------------------------------
# Rooms


def test_rooms_create_list_conflict_delete(server):
    t = token_for(server, "alice")
    before = now_ms()
    r = api(server, "POST", "/api/v1/rooms", {"name": "ops"}, token=t)
    assert r.status == 201, r
    assert r.body["name"] == "ops" and r.body["last_seq"] == 0, r.body
    assert before - 5000 <= r.body["created_at"] <= now_ms() + 5000, r.body

    api(server, "POST", "/api/v1/rooms", {"name": "alpha"}, token=t)
    # a dm room exists too, but is never listed
    line = server.client("bob")
    line.tell("alice", "psst")

    rooms = api(server, "GET", "/api/v1/rooms", token=t).body["rooms"]
    names = [x["name"] for x in rooms]
    assert "ops" in names and "alpha" in names, rooms
    assert names == sorted(names), f"rooms not sorted by name: {names}"
    assert not any(n.startswith(("dm.", "calls.")) for n in names), names

    assert_error(api(server, "POST", "/api/v1/rooms", {"name": "ops"}, token=t), 409, "room_exists")
    for bad in ("bad room", "x" * 65, "", "caf\u00e9", "a/b"):
        assert_error(api(server, "POST", "/api/v1/rooms", {"name": bad}, token=t), 400, "invalid_room")
    assert_error(api(server, "POST", "/api/v1/rooms", {"nom": "x"}, token=t), 400, "bad_request")

    # Used rooms report their last seq.
    ack = post(server, t, "ops", "one").body
    ops = [x for x in api(server, "GET", "/api/v1/rooms", token=t).body["rooms"] if x["name"] == "ops"]
    assert ops and ops[0]["last_seq"] == ack["seq"], ops

    r = api(server, "DELETE", "/api/v1/rooms/ops", token=t)
    assert r.status == 204 and r.raw == b"", r
    names = [x["name"] for x in api(server, "GET", "/api/v1/rooms", token=t).body["rooms"]]
    assert "ops" not in names and "alpha" in names, names
    assert_error(api(server, "DELETE", "/api/v1/rooms/ops", token=t), 404, "no_such_room")
    assert_error(api(server, "GET", "/api/v1/rooms/ops/messages", token=t), 404, "no_such_room")
    assert_error(api(server, "DELETE", "/api/v1/rooms/never-was", token=t), 404, "no_such_room")


def test_post_to_unknown_room_without_auto_create(make_server):
    server = make_server(rooms={"auto_create": False})
    t = token_for(server, "alice")
    assert_error(post(server, t, "nowhere", "hello?"), 404, "no_such_room")
    assert_error(api(server, "GET", "/api/v1/rooms/nowhere/messages", token=t), 404, "no_such_room")
    assert api(server, "POST", "/api/v1/rooms", {"name": "somewhere"}, token=t).status == 201
    assert post(server, t, "somewhere", "here").status == 201


def test_post_creates_room_with_auto_create(server):
    t = token_for(server, "alice")
    r = post(server, t, "fresh-room", "first!")
    assert r.status == 201, r
    assert r.body["room"] == "fresh-room" and r.body["seq"] >= 1
    names = [x["name"] for x in api(server, "GET", "/api/v1/rooms", token=t).body["rooms"]]
    assert "fresh-room" in names


# --------------------------------------------------------------------------------------------
# Messages


def test_messages_paging(server):
    t = token_for(server, "alice")
    assert api(server, "POST", "/api/v1/rooms", {"name": "paging"}, token=t).status == 201
    count = 60
    bodies = [f"message {i} {unique('p')}" for i in range(count)]
    acks = []
    for b in bodies:
        r = post(server, t, "paging", b)
        assert r.status == 201, r
        acks.append(r.body)
    seqs = [a["seq"] for a in acks]
    assert seqs == list(range(seqs[0], seqs[0] + count)), f"acked seqs not consecutive: {seqs}"

    everything = messages(server, t, "paging", "?limit=500")
    mine = [e for e in everything if e["kind"] == "chat"]
    assert [e["body"] for e in mine] == bodies
    assert [(e["id"], e["seq"], e["ts"]) for e in mine] == [(a["id"], a["seq"], a["ts"]) for a in acks]
    for e in mine:
        assert e["room"] == "paging" and e["from"]["user"] == "alice" and e["from"]["via"] == "rest", e
        assert e["attrs"] == {}
    all_seqs = [e["seq"] for e in everything]
    assert all_seqs == sorted(all_seqs) and all_seqs == list(range(all_seqs[0], all_seqs[0] + len(all_seqs)))
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids), "ULIDs must sort in creation order"

    by_seq = {e["seq"]: e for e in everything}

    def page(query: str) -> list[int]:
        return [e["seq"] for e in messages(server, t, "paging", query)]

    last = all_seqs[-1]
    # nothing: the newest 50 (default limit), oldest first
    assert page("") == all_seqs[-50:]
    assert page("?limit=10") == all_seqs[-10:]
    # before: the newest `limit` below it
    assert page(f"?before={seqs[20]}&limit=5") == seqs[15:20]
    assert page(f"?before={seqs[3]}&limit=50") == [s for s in all_seqs if s < seqs[3]]
    assert page(f"?before={seqs[40]}") == [s for s in all_seqs if s < seqs[40]][-50:]
    # after: the oldest `limit` above it
    assert page(f"?after={seqs[9]}&limit=5") == seqs[10:15]
    assert page(f"?after={seqs[-3]}") == seqs[-2:]
    assert page(f"?after={last}") == []
    assert page(f"?after=0&limit=3") == all_seqs[:3]
    # both
    assert page(f"?after={seqs[10]}&before={seqs[20]}&limit=500") == seqs[11:20]
    assert page(f"?after={seqs[10]}&before={seqs[20]}&limit=4") == seqs[11:15]
    # walking forwards through everything
    walked, cursor = [], 0
    for _ in range(100):
        p = messages(server, t, "paging", f"?after={cursor}&limit=7")
        walked.extend(p)
        if len(p) < 7:
            break
        cursor = p[-1]["seq"]
    assert walked == everything
    # every page holds the same envelopes as the full read
    for e in messages(server, t, "paging", f"?before={seqs[30]}&limit=5"):
        assert e == by_seq[e["seq"]]

    for bad in ("?limit=0", "?limit=501", "?limit=abc", "?before=-1", "?after=x", "?limit=1.5"):
        assert_error(api(server, "GET", f"/api/v1/rooms/paging/messages{bad}", token=t), 400, "bad_request")
    assert_error(api(server, "GET", "/api/v1/rooms/no-such-room-here/messages", token=t), 404, "no_such_room")
    assert_error(api(server, "GET", "/api/v1/rooms/Bad%20Room/messages", token=t), 400, "invalid_room")
    # the {room} segment is percent-decoded (RFC 3986): an escaped letter names the same room,
    # a broken escape is an invalid name, never a different room
    escaped = api(server, "GET", "/api/v1/rooms/p%61ging/messages?limit=5", token=t)
    assert escaped.status == 200, escaped
    assert escaped.body["room"] == "paging"
    assert escaped.body["envelopes"] == messages(server, t, "paging", "?limit=5")
    assert_error(api(server, "GET", "/api/v1/rooms/paging%zz/messages", token=t), 400, "invalid_room")
    assert_error(api(server, "GET", "/api/v1/rooms/pag%2Fing/messages", token=t), 400, "invalid_room")


def test_post_reaches_line_and_websocket_members(server):
    t = token_for(server, "alice")
    line = server.client("bob")
    line.join("lobby")
    ws = ws_client(server, "carol")
    ws.join("lobby")

    r = post(server, t, "lobby", "hello from rest")
    assert r.status == 201, r
    ack = r.body
    assert ack["room"] == "lobby" and "client_id" not in ack, ack
    assert abs(ack["ts"] - now_ms()) < 60_000

    m = parse_msg(line.expect(re.compile(r"^MSG lobby \d+ \d+ alice rest "), timeout=10))
    assert (m.room, m.seq, m.ts, m.user, m.via, m.text) == ("lobby", ack["seq"], ack["ts"], "alice", "rest", "hello from rest")

    env = ws.expect_envelope(room="lobby", user="alice", timeout=10)
    oc.validate_schema("Envelope", env, "WS envelope")
    assert env["id"] == ack["id"] and env["seq"] == ack["seq"] and env["ts"] == ack["ts"], (env, ack)
    assert env["from"] == {"user": "alice", "via": "rest"}, env
    assert (env["kind"], env["body"], env["attrs"]) == ("chat", "hello from rest", {})

    # kind, attrs and client_id travel with it.
    r = post(server, t, "lobby", "+1", kind="reaction", attrs={"reply_to": ack["id"]}, client_id="react-1")
    assert r.status == 201, r
    assert r.body["client_id"] == "react-1"
    env = ws.expect_envelope(room="lobby", id=r.body["id"], timeout=10)
    assert (env["kind"], env["body"], env["attrs"], env["client_id"]) == ("reaction", "+1", {"reply_to": ack["id"]}, "react-1")
    m = line.expect_msg("lobby", user="alice", timeout=10)
    assert m.seq == r.body["seq"] and m.text.startswith("[reaction]"), m

    # And the REST poster is not a member of the room.
    occ = api(server, "GET", "/api/v1/rooms/lobby/occupants", token=t).body["occupants"]
    assert {"user": "alice", "via": "rest"} not in occ, occ


def test_client_id_dedup(server):
    t = token_for(server, "alice")
    ws = ws_client(server, "bob")
    ws.join("lobby")
    first = post(server, t, "lobby", "only once", client_id="dup-1")
    assert first.status == 201, first
    again = post(server, t, "lobby", "only once", client_id="dup-1")
    assert again.status == 200, again
    assert again.body == first.body, (first.body, again.body)
    # another user's same client_id is a different message
    other = post(server, token_for(server, "carol"), "lobby", "only once", client_id="dup-1")
    assert other.status == 201 and other.body["seq"] != first.body["seq"], other
    sentinel = post(server, t, "lobby", "sentinel").body

    got = []
    while True:
        env = ws.expect_envelope(room="lobby", timeout=10)
        got.append(env)
        if env["id"] == sentinel["id"]:
            break
    dup = [e for e in got if e.get("client_id") == "dup-1" and e["from"]["user"] == "alice"]
    assert len(dup) == 1 and dup[0]["seq"] == first.body["seq"], got
    hist = [e for e in messages(server, t, "lobby", "?limit=500") if e["body"] == "only once"]
    assert [(e["from"]["user"], e["seq"]) for e in hist] == [("alice", first.body["seq"]), ("carol", other.body["seq"])]


def test_invalid_messages(server):
    t = token_for(server, "alice")
    # limits.max_body_bytes defaults to 16384; the request itself stays under max_message_bytes.
    assert_error(post(server, t, "lobby", "x" * 16385), 413, "body_too_large")
    assert_error(post(server, t, "lobby", "\u00e9" * 8193), 413, "body_too_large")  # 16386 bytes
    assert post(server, t, "lobby", "x" * 16384).status == 201
    # bigger than websocket.max_message_bytes (65536): refused as a request
    assert_error(post(server, t, "lobby", "x" * 70000), 413, ("request_too_large",))
    assert_error(post(server, t, "lobby", "bell \u0007"), 400, "invalid_body")
    assert_error(post(server, t, "lobby", "hi", kind="bogus"), 400, "invalid_kind")
    assert_error(post(server, t, "lobby", "hi", kind="join"), 400, "invalid_kind")
    assert_error(post(server, t, "lobby", "hi", attrs={"Bad Key": "v"}), 400, "invalid_attrs")
    assert_error(post(server, t, "lobby", "hi", attrs={"k": 5}), 400, ("invalid_attrs", "bad_request"))
    assert_error(post(server, t, "lobby", "hi", client_id="has space"), 400, "invalid_client_id")
    assert_error(api(server, "POST", "/api/v1/rooms/lobby/messages", {"text": "no body"}, token=t), 400, "bad_request")
    assert_error(api(server, "POST", "/api/v1/rooms/lobby/messages", {"body": 42}, token=t), 400, "bad_request")
    assert_error(post(server, t, "Bad%20Room", "hi"), 400, "invalid_room")
    # none of these reached history
    bodies = [e["body"] for e in messages(server, t, "lobby", "?limit=500")]
    assert "hi" not in bodies and "bell \u0007" not in bodies


def test_bad_json(server):
    t = token_for(server, "alice")
    for raw in (b'{"body": "unterminated', b"not json at all", b"\xff\xfe{}"):
        assert_error(api(server, "POST", "/api/v1/rooms/lobby/messages", raw=raw, token=t), 400, "invalid_json")
        assert_error(api(server, "POST", "/api/v1/rooms", raw=raw, token=t), 400, "invalid_json")
    # valid JSON, but not an object
    assert_error(api(server, "POST", "/api/v1/rooms/lobby/messages", raw=b'["body"]', token=t), 400,
                 ("invalid_json", "bad_request"))


def test_dm_and_call_rooms_are_private(server):
    alice = server.client("alice")
    seq = alice.tell("bob", "just between us")
    ta, tb, tc = (token_for(server, u) for u in ("alice", "bob", "carol"))

    for t in (ta, tb):
        envs = messages(server, t, "dm.alice.bob")
        assert [(e["seq"], e["body"], e["from"]["via"]) for e in envs] == [(seq, "just between us", "line")], envs

    assert_error(api(server, "GET", "/api/v1/rooms/dm.alice.bob/messages", token=tc), 403, "forbidden")
    assert_error(post(server, tc, "dm.alice.bob", "let me in"), 403, "forbidden")
    assert_error(api(server, "GET", "/api/v1/rooms/calls.alice/messages", token=tb), 403, "forbidden")
    assert_error(post(server, ta, "calls.alice", "nobody writes here"), 403, "forbidden")
    # a participant may post: a direct message, delivered to the other side on line
    bob = server.client("bob")
    r = post(server, tb, "dm.alice.bob", "reply over rest")
    assert r.status == 201, r
    m = alice.expect_msg("dm.alice.bob", "reply over rest", user="bob", timeout=10)
    assert (m.seq, m.via) == (r.body["seq"], "rest")
    # bob's own line session gets it too: the REST request is not a session of his
    m2 = bob.expect_msg("dm.alice.bob", "reply over rest", user="bob", timeout=10)
    assert m2.seq == m.seq
    assert "let me in" not in [e["body"] for e in messages(server, ta, "dm.alice.bob")]


def test_occupants(server):
    t = token_for(server, "alice")
    line = server.client("bob")
    line.join("lobby")
    ws = ws_client(server, "carol")
    ws.join("lobby")
    r = api(server, "GET", "/api/v1/rooms/lobby/occupants", token=t)
    assert r.status == 200, r
    assert r.body["room"] == "lobby"
    occ = r.body["occupants"]
    assert {"user": "bob", "via": "line"} in occ and {"user": "carol", "via": "ws"} in occ, occ
    assert len(occ) == 2, occ

    ws.close()
    line.say("lobby", "carol left?")
    deadline = time.monotonic() + 10
    while True:
        occ = api(server, "GET", "/api/v1/rooms/lobby/occupants", token=t).body["occupants"]
        if occ == [{"user": "bob", "via": "line"}]:
            break
        assert time.monotonic() < deadline, f"carol/ws still listed after closing: {occ}"
        time.sleep(0.1)
    assert_error(api(server, "GET", "/api/v1/rooms/no-such-room-here/occupants", token=t), 404, "no_such_room")


# --------------------------------------------------------------------------------------------
# Operations


def test_healthz(server):
    r = api(server, "GET", "/healthz")
    assert r.status == 200, r
    assert r.body["status"] == "ok" and r.body["storage"] == "ok", r.body
    assert r.body["listeners"].get("line") == "up" and r.body["listeners"].get("websocket") == "up", r.body


def test_unknown_path_and_wrong_method(server):
    t = token_for(server, "alice")
    assert_error(api(server, "GET", "/api/v1/nope", token=t, documented=False), 404, "not_found")
    assert_error(api(server, "GET", "/api/v2/rooms", token=t, documented=False), 404, "not_found")
    assert_error(api(server, "GET", "/api/v1/rooms/lobby/messages/extra", token=t, documented=False), 404, "not_found")
    for method, path in (("PUT", "/api/v1/rooms"), ("GET", "/api/v1/token"), ("PATCH", "/api/v1/rooms/lobby/messages"),
                         ("POST", "/healthz")):
        r = api(server, method, path, token=t, documented=False)
        assert_error(r, 405, "method_not_allowed")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_exposition(text: str) -> tuple[dict, list]:
    """Prometheus text format -> ({family: type}, [(name, {labels}, value)])."""
    types, samples = {}, []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                assert parts[2] not in types, f"two TYPE lines for {parts[2]}"
                types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {}
        if m.group(2):
            pos, raw = 0, m.group(2)
            while pos < len(raw):
                lm = _LABEL.match(raw, pos)
                assert lm, f"bad labels in {line!r}"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        v = m.group(3)
        value = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(v)
        samples.append((m.group(1), labels, float(v) if value is None else value))
    return types, samples


def value(samples, name: str, **labels) -> float | None:
    for n, l, v in samples:
        if n == name and all(l.get(k) == x for k, x in labels.items()):
            return v
    return None


def test_metrics_after_traffic(server):
    t = token_for(server, "alice")
    line = server.client("bob")
    line.join("lobby")
    ws = ws_client(server, "carol")
    ws.join("lobby")
    post(server, t, "lobby", "metric me")
    line.expect_msg("lobby", "metric me")
    ws.expect_envelope(body="metric me")
    ws.say("lobby", "from ws")
    line.expect_msg("lobby", "from ws")
    line.say("lobby", "from line")
    ws.expect_envelope(body="from line")
    ws.send_text("{not json")
    ws.expect_error("invalid_json")

    r = api(server, "GET", "/metrics")
    assert r.status == 200, r
    assert r.content_type.replace(" ", "").lower().startswith("text/plain;version=0.0.4"), r.content_type
    types, samples = parse_exposition(r.text)
    expected = {
        "switchboard_sessions": "gauge",
        "switchboard_envelopes_in_total": "counter",
        "switchboard_envelopes_out_total": "counter",
        "switchboard_fanout_seconds": "histogram",
        "switchboard_history_commit_seconds": "histogram",
        "switchboard_slow_consumers_total": "counter",
        "switchboard_rejected_total": "counter",
    }
    for fam, typ in expected.items():
        # Prometheus >= 2 also accepts a counter family named without _total.
        got = types.get(fam) or types.get(fam.removesuffix("_total"))
        assert got == typ, f"metric family {fam}: TYPE {got!r}, expected {typ}; families: {sorted(types)}"

    for proto in ("rest", "ws", "line"):
        v = value(samples, "switchboard_envelopes_in_total", protocol=proto)
        assert v is not None and v >= 1, f"switchboard_envelopes_in_total{{protocol={proto!r}}} = {v}"
    for proto in ("ws", "line"):
        v = value(samples, "switchboard_envelopes_out_total", protocol=proto)
        assert v is not None and v >= 1, f"switchboard_envelopes_out_total{{protocol={proto!r}}} = {v}"
        v = value(samples, "switchboard_sessions", protocol=proto)
        assert v is not None and v >= 1, f"switchboard_sessions{{protocol={proto!r}}} = {v}"
    rejected = [(l, v) for n, l, v in samples if n == "switchboard_rejected_total" and l.get("protocol") == "ws"]
    assert sum(v for _, v in rejected) >= 1 and all("reason" in l for l, _ in rejected), \
        f"switchboard_rejected_total{{protocol='ws'}} after an invalid frame: {rejected}"
    for hist in ("switchboard_fanout_seconds", "switchboard_history_commit_seconds"):
        count = value(samples, hist + "_count")
        inf = value(samples, hist + "_bucket", le="+Inf")
        assert count is not None and count >= 1, f"{hist}_count = {count}"
        assert inf == count, f"{hist}: +Inf bucket {inf} != count {count}"
        assert value(samples, hist + "_sum") is not None, f"{hist}_sum missing"
        buckets = sorted((float(l["le"]), v) for n, l, v in samples if n == hist + "_bucket")
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{hist} buckets not cumulative: {buckets}"
    slow = value(samples, "switchboard_slow_consumers_total")
    assert slow in (None, 0), f"switchboard_slow_consumers_total = {slow} without any slow consumer"

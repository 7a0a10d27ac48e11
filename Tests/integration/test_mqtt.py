"""The MQTT bridge (protocols/mqtt.md) against a real Mosquitto and real clients: devices
(paho-mqtt, mosquitto_pub) to line and WebSocket clients and back, broker and gateway restarts,
the retained status and last will, malformed input, deduplication, room patterns and the ACL.

Each test starts its own broker (conftest `make_broker`: free port, temp config and persistence
dir) and a gateway bridging it (`make_server(mqtt={...})`)."""

from __future__ import annotations

import json
import re
import threading
import time

import paho.mqtt.client as mqtt

import openapi_check as oc
from mqtt_helpers import EXAMPLE_PASSWORDS, MQTTClient, metric, wait_bridge_up, wait_metric
from swb import USERS, parse_msg, unique
from wsclient import ws_client

PREFIX = "switchboard"
STATUS = f"{PREFIX}/status"
DROPPED = "switchboard_mqtt_dropped_total"
REJECTED = "switchboard_rejected_total"


def in_topic(room: str, sender: str) -> str:
    return f"{PREFIX}/rooms/{room}/in/{sender}"


def out_topic(room: str) -> str:
    return f"{PREFIX}/rooms/{room}/out"


def start_gateway(make_server, broker, mqtt_keys: dict | None = None, **sections):
    """A gateway bridging `broker`, fast reconnects, waited for until it is subscribed."""
    keys = {"enabled": True, "port": broker.port, "reconnect_min_ms": 100, "reconnect_max_ms": 1000}
    keys.update(mqtt_keys or {})
    s = make_server(mqtt=keys, **sections)
    wait_bridge_up(s)
    wait_status(broker, "online", username=keys.get("username") or None)
    return s


def wait_status(broker, value: str, username: str | None = None, timeout: float = 10.0) -> None:
    """The retained status is `value`. The gateway publishes `online` after its SUBSCRIBE on the
    same connection, so once it is visible the bridge's subscription is in place too."""
    deadline = time.monotonic() + timeout
    while True:
        c = MQTTClient(broker.port, unique("status-probe"), username=username,
                       password=EXAMPLE_PASSWORDS.get(username) if username else None)
        try:
            c.connect()
            c.subscribe(STATUS)
            try:
                m = c.expect(lambda m: m.topic == STATUS, timeout=max(0.5, min(2.0, deadline - time.monotonic())),
                             what="the retained status")
                if m.retain and m.text == value:
                    return
                last = (m.text, m.retain)
            except AssertionError as e:
                last = str(e)
        finally:
            c.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"retained {STATUS} is not {value!r} after {timeout}s: {last}")
        time.sleep(0.1)


def rest_token(server, user: str = "alice") -> str:
    r = oc.call(server.http_url, "POST", "/api/v1/token", {"user": user, "password": USERS[user]})
    assert r.status == 200, r
    return r.body["token"]


def room_history(server, room: str) -> list[dict]:
    """Every envelope of `room`, oldest first, paging forwards with `after`."""
    token = rest_token(server)
    out: list[dict] = []
    after = 0
    while True:
        r = oc.call(server.http_url, "GET", f"/api/v1/rooms/{room}/messages?after={after}&limit=500", token=token)
        assert r.status == 200, r
        page = r.body["envelopes"]
        out += page
        if len(page) < 500:
            return out
        after = page[-1]["seq"]


def chat_bodies(envelopes: list[dict]) -> list[str]:
    return [e["body"] for e in envelopes if e["kind"] == "chat"]


class CLISubscriber:
    """`mosquitto_sub -v` on some topics, its output read by a thread (lines: topic, payload)."""

    def __init__(self, broker, topics: list[str]):
        extra = []
        for t in topics[1:]:
            extra += ["-t", t]
        self.proc = broker.sub_process(topics[0], count=100000, timeout_s=120, extra=tuple(extra))
        self.lines: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            topic, _, payload = raw.decode("utf-8", "replace").rstrip("\n").partition(" ")
            with self._cond:
                self.lines.append((topic, payload))
                self._cond.notify_all()

    def wait(self, cond, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not cond():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def lines_on(self, topic: str) -> list[str]:
        return [p for t, p in self.lines if t == topic]

    def envelopes(self) -> list[dict]:
        return [json.loads(p) for t, p in self.lines if t.endswith("/out")]

    def stderr(self) -> str:
        return "" if self.proc.poll() is None else self.proc.stderr.read().decode("utf-8", "replace")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------
# Devices -> rooms


def test_device_messages_reach_line_and_websocket(make_server, broker):
    s = start_gateway(make_server, broker)
    line = s.client("alice")
    line.join("lobby")
    ws = ws_client(s, "bob")
    ws.join("lobby")

    # paho device, plain text payload
    dev = MQTTClient(broker.port, "sensor-1").connect()
    rc = dev.publish_wait(in_topic("lobby", "sensor-1"), "temperature 21.5 °C")
    assert not rc.is_failure, rc
    m = line.expect_msg("lobby", "temperature 21.5 °C", timeout=10)
    assert (m.user, m.via) == ("sensor-1", "mqtt"), m
    env = ws.expect_envelope(room="lobby", body="temperature 21.5 °C", timeout=10)
    assert env["from"] == {"user": "sensor-1", "via": "mqtt"}, env
    assert (env["seq"], env["kind"], env["attrs"]) == (m.seq, "chat", {}), env
    assert "client_id" not in env, env

    # mosquitto_pub device, JSON object with kind and client_id
    payload = json.dumps({"body": "door opened", "kind": "chat", "client_id": "door-1"})
    r = broker.pub(in_topic("lobby", "door-sensor"), payload)
    assert r.returncode == 0, r
    m2 = line.expect_msg("lobby", "door opened", timeout=10)
    assert (m2.user, m2.via) == ("door-sensor", "mqtt") and m2.seq > m.seq, m2
    env2 = ws.expect_envelope(room="lobby", body="door opened", timeout=10)
    assert env2["from"] == {"user": "door-sensor", "via": "mqtt"}, env2
    assert env2["client_id"] == "door-1" and env2["seq"] == m2.seq, env2

    # a reaction (another kind a device may send)
    r = broker.pub(in_topic("lobby", "door-sensor"), json.dumps({"body": "👍", "kind": "reaction",
                                                                  "attrs": {"ignored": "x"}}))
    assert r.returncode == 0, r
    env3 = ws.expect_envelope(room="lobby", kind="reaction", timeout=10)
    assert env3["from"] == {"user": "door-sensor", "via": "mqtt"} and env3["body"] == "👍", env3

    # history has them, as the same envelopes
    hist = {e["seq"]: e for e in room_history(s, "lobby")}
    assert hist[env["seq"]] == env and hist[env2["seq"]] == env2, hist
    assert metric(s, "switchboard_mqtt_messages_in_total") >= 3


def test_line_and_websocket_messages_reach_out_topic(make_server, broker):
    s = start_gateway(make_server, broker)
    sub = MQTTClient(broker.port, "display-1").connect()
    sub.subscribe(out_topic("lobby"), qos=1)
    # mosquitto_sub on /out and a probe topic: once a probe comes through, it is subscribed
    probe = f"{PREFIX}/test-probe"
    cli = CLISubscriber(broker, [out_topic("lobby"), probe])
    deadline = time.monotonic() + 10
    while not cli.lines_on(probe):
        assert time.monotonic() < deadline, f"mosquitto_sub never subscribed: {cli.stderr()}"
        broker.pub(probe, "probe", qos=0)
        cli.wait(lambda: cli.lines_on(probe), timeout=0.5)

    ws = ws_client(s, "alice")
    ws.join("lobby")
    line = s.client("bob")
    line.join("lobby")

    ack = ws.say("lobby", "from the web", client_id="w-1")
    seq = line.say("lobby", "from a terminal")

    got = []
    for body in ("from the web", "from a terminal"):
        m = sub.expect(lambda m, b=body: m.json().get("body") == b, timeout=10, what=f"/out {body!r}")
        assert m.topic == out_topic("lobby") and m.qos == 1 and not m.retain, m
        got.append(m)
    e1, e2 = got[0].json(), got[1].json()
    assert e1["from"] == {"user": "alice", "via": "ws"} and e1["seq"] == ack["seq"] and e1["id"] == ack["id"], e1
    assert e1["client_id"] == "w-1" and e1["kind"] == "chat" and e1["room"] == "lobby", e1
    assert e2["from"] == {"user": "bob", "via": "line"} and e2["seq"] == seq, e2
    # the canonical JSON, byte for byte as history and WebSocket write it
    hist = {e["seq"]: e for e in room_history(s, "lobby")}
    assert json.loads(got[0].payload) == hist[ack["seq"]]
    canonical = json.dumps(hist[seq], ensure_ascii=False, separators=(",", ":")).encode()
    assert got[1].payload == canonical, (got[1].payload, canonical)

    # mosquitto_sub printed the same envelopes, in seq order
    assert cli.wait(lambda: len([e for e in cli.envelopes() if e["kind"] == "chat"]) >= 2, timeout=10), cli.lines
    chats = [e for e in cli.envelopes() if e["kind"] == "chat"]
    assert chats == [e1, e2], chats
    cli.close()


def test_rooms_patterns_and_typing_not_bridged(make_server, broker):
    s = start_gateway(make_server, broker, {"rooms": ["lobby", "iot*"]})
    sub = MQTTClient(broker.port, "watch-all").connect()
    sub.subscribe(f"{PREFIX}/rooms/+/out", qos=1)
    ws = ws_client(s, "alice")
    for room in ("lobby", "other", "iot-kitchen"):
        ws.join(room)
    ws.send({"op": "typing", "room": "lobby"})
    ws.say("other", "not bridged")
    ws.say("iot-kitchen", "bridged iot")
    ws.send({"op": "typing", "room": "iot-kitchen"})
    ws.say("lobby", "bridged lobby")
    last = sub.expect(lambda m: m.json().get("body") == "bridged lobby", timeout=10, what="the last chat")
    # One ordered queue: everything published before the last chat has arrived by now.
    seen = [m.json() for m in sub.backlog] + [last.json()]
    assert [e for e in seen if e["kind"] == "typing"] == [], seen
    assert [e for e in seen if e["room"] not in ("lobby", "iot-kitchen")] == [], seen
    assert "bridged iot" in [e["body"] for e in seen], seen
    topics = {m.topic for m in sub.backlog} | {last.topic}
    assert topics <= {out_topic("lobby"), out_topic("iot-kitchen")}, topics


def test_direct_messages_are_not_bridged(make_server, broker):
    s = start_gateway(make_server, broker)   # mqtt.rooms = ["*"]
    sub = MQTTClient(broker.port, "nosy-device").connect()
    sub.subscribe(f"{PREFIX}/#")
    alice = s.client("alice")
    alice.join("lobby")
    alice.tell("bob", "a secret for bob")
    alice.say("lobby", "public")
    last = sub.expect(lambda m: m.topic.endswith("/out") and m.json().get("body") == "public", timeout=10)
    leaked = [m for m in sub.backlog + [last] if b"secret" in m.payload or "/dm." in m.topic]
    assert leaked == [], leaked


def test_mqtt_3_1_1(make_server, broker):
    s = start_gateway(make_server, broker, {"protocol": "3.1.1"})
    line = s.client("alice")
    line.join("lobby")
    r = broker.pub(in_topic("lobby", "old-device"), "over 3.1.1", extra=("-V", "mqttv311"))
    assert r.returncode == 0, r
    m = line.expect_msg("lobby", "over 3.1.1", user="old-device", timeout=10)
    assert m.via == "mqtt"
    sub = MQTTClient(broker.port, "old-display", protocol=mqtt.MQTTv311).connect()
    sub.subscribe(out_topic("lobby"))
    line.say("lobby", "back over 3.1.1")
    got = sub.expect(lambda m: m.json().get("body") == "back over 3.1.1", timeout=10)
    assert got.json()["from"] == {"user": "alice", "via": "line"}


# --------------------------------------------------------------------------------------------
# Deduplication


def test_dedup_plain_redelivery_and_json_client_id(make_server, broker):
    s = start_gateway(make_server, broker)
    line = s.client("alice")
    line.join("lobby")
    dev = MQTTClient(broker.port, "sensor-1").connect()
    topic = in_topic("lobby", "sensor-1")
    before = metric(s, DROPPED, reason="duplicate")

    # the same plain payload twice within mqtt.dedup_seconds: a QoS 1 redelivery, bridged once
    for payload in ("level 7", "level 7", json.dumps({"body": "once", "client_id": "k-1"}),
                    json.dumps({"body": "once", "client_id": "k-1"}), "done"):
        assert not dev.publish_wait(topic, payload).is_failure
    lines = line.lines_until(re.compile(r"^MSG lobby \d+ \d+ sensor-1 mqtt done$"), timeout=10)
    bodies = [parse_msg(x).text for x in lines if x.startswith("MSG lobby ")]
    assert bodies == ["level 7", "once", "done"], lines
    wait_metric(s, DROPPED, before + 1, reason="duplicate")
    assert chat_bodies(room_history(s, "lobby")) == ["level 7", "once", "done"]


# --------------------------------------------------------------------------------------------
# Malformed input


MALFORMED = [
    # (reason, room, sender, payload)
    ("invalid_utf8", "lobby", "sensor-1", b"caf\xc3 \xff\xfe broken"),
    ("payload_too_large", "lobby", "sensor-1", b"x" * 300),
    ("bad_json", "lobby", "sensor-1", b'{"body": "unterminated'),
    ("bad_json", "lobby", "sensor-1", b'{"kind": "chat"}'),
    ("invalid_kind", "lobby", "sensor-1", b'{"body": "sys", "kind": "system"}'),
    ("invalid_room", "Lobby", "sensor-1", b"upper-case room"),
    ("invalid_room", "dm.alice.bob", "sensor-1", b"into a direct room"),
    ("invalid_room", "calls.alice", "sensor-1", b"into a call log"),
    ("invalid_sender", "lobby", "Sensor-1", b"upper-case sender"),
    ("invalid_sender", "lobby", "sensor.1", b"dotted sender"),
    ("invalid_sender", "lobby", "s" * 33, b"long sender"),
    ("rejected", "lobby", "sensor-1", b"control \x01 character"),
]


def test_malformed_input_is_dropped_and_counted(make_server, broker):
    s = start_gateway(make_server, broker, {"max_payload_bytes": 256})
    line = s.client("alice")
    line.join("lobby")
    ws = ws_client(s, "bob")
    ws.join("lobby")
    dev = MQTTClient(broker.port, "sensor-1").connect()
    problems = []
    for i, (reason, room, sender, payload) in enumerate(MALFORMED):
        dropped = metric(s, DROPPED, reason=reason)
        rejected = metric(s, REJECTED, protocol="mqtt", reason=reason)
        assert not dev.publish_wait(in_topic(room, sender), payload).is_failure
        marker = f"still-working-{i}"
        assert not dev.publish_wait(in_topic("lobby", "sensor-1"), marker).is_failure
        # nothing but the marker reaches the room
        lines = line.lines_until(re.compile(rf" {marker}$"), timeout=10)
        extra = [x for x in lines if x.startswith("MSG ") and not x.endswith(marker)]
        if extra:
            problems.append(f"{reason} {payload[:40]!r}: delivered {extra}")
        env = ws.expect_envelope(body=marker, timeout=10)
        stray = [f["envelope"] for f in ws.backlog if f.get("op") == "envelope" and f["envelope"]["kind"] != "join"]
        ws.backlog.clear()
        if stray:
            problems.append(f"{reason}: WebSocket got {stray}")
        assert env["from"] == {"user": "sensor-1", "via": "mqtt"}
        try:
            wait_metric(s, DROPPED, dropped + 1, timeout=5, reason=reason)
        except AssertionError as e:
            problems.append(f"{reason} {payload[:40]!r}: {e}")
        try:
            wait_metric(s, REJECTED, rejected + 1, timeout=5, protocol="mqtt", reason=reason)
        except AssertionError as e:
            problems.append(f"{reason} {payload[:40]!r}: {e}")
    # history holds the markers only
    bodies = chat_bodies(room_history(s, "lobby"))
    assert bodies == [f"still-working-{i}" for i in range(len(MALFORMED))], bodies
    for room in ("dm.alice.bob",):
        r = oc.call(s.http_url, "GET", f"/api/v1/rooms/{room}/messages", token=rest_token(s, "alice"))
        assert r.status in (200, 404) and (r.status == 404 or r.body["envelopes"] == []), r
    # every reason was logged (at most once a minute each)
    log = s.log_text(200000)
    for reason in {r for r, *_ in MALFORMED}:
        if not re.search(rf"mqtt message dropped.*\breason={reason}\b|\breason={reason}\b.*mqtt message dropped", log):
            problems.append(f"no log line for reason={reason}")
    # the gateway is still fine in both directions
    assert s.running()
    sub = MQTTClient(broker.port, "display").connect()
    sub.subscribe(out_topic("lobby"))
    line.say("lobby", "after all that")
    sub.expect(lambda m: m.json().get("body") == "after all that", timeout=10)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# Restarts


def test_broker_restart_mid_stream_loses_nothing(make_server, broker):
    room = "stream"
    n = 60
    s = start_gateway(make_server, broker)
    carol = s.client("carol", timeout=30)
    carol.join(room)
    bob = ws_client(s, "bob", timeout=30)
    bob.join(room)
    alice_ws = ws_client(s, "alice")
    alice_ws.join(room)
    alice_line = s.client("alice")
    alice_line.join(room)

    out = MQTTClient(broker.port, "out-watch", persistent=True).connect()
    out.subscribe(out_topic(room), qos=1)
    dev1 = MQTTClient(broker.port, "sensor-1", persistent=True).connect()   # plain text
    dev2 = MQTTClient(broker.port, "sensor-2", persistent=True).connect()   # JSON with client_id

    progress = {"dev": 0, "ws": 0, "line": 0}
    errors: list[str] = []
    mids: list = []

    def devices():
        try:
            for i in range(n):
                mids.append((dev1, dev1.publish_ordered(in_topic(room, "sensor-1"), f"dev-{i:03d}")))
                mids.append((dev2, dev2.publish_ordered(in_topic(room, "sensor-2"),
                                                        json.dumps({"body": f"js-{i:03d}", "client_id": f"js-{i:03d}"}))))
                progress["dev"] = i + 1
                time.sleep(0.03)   # pacing, so the restart falls mid-stream
        except Exception as e:  # noqa: BLE001
            errors.append(f"devices: {e!r}")

    def ws_sender():
        try:
            for i in range(n):
                alice_ws.say(room, f"ws-{i:03d}", client_id=f"ws-{i:03d}", timeout=20)
                progress["ws"] = i + 1
                time.sleep(0.03)
        except Exception as e:  # noqa: BLE001
            errors.append(f"ws sender: {e!r}")

    def line_sender():
        try:
            for i in range(n):
                alice_line.say(room, f"line-{i:03d}", timeout=20)
                progress["line"] = i + 1
                time.sleep(0.03)
        except Exception as e:  # noqa: BLE001
            errors.append(f"line sender: {e!r}")

    threads = [threading.Thread(target=f, daemon=True) for f in (devices, ws_sender, line_sender)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while min(progress.values()) < n // 3:
        assert time.monotonic() < deadline and not errors, (progress, errors)
        time.sleep(0.01)
    broker.restart()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), f"a sender hung: {progress}"
    assert not errors, errors
    assert progress == {"dev": n, "ws": n, "line": n}, progress

    # every device publish is acknowledged by the broker in the end (paho resends after reconnect)
    for client, mid in mids:
        client.wait_puback(mid, timeout=30)
    assert dev1.connects >= 2 and out.connects >= 2, (dev1.connects, out.connects)

    series = {
        "dev": [f"dev-{i:03d}" for i in range(n)],
        "js": [f"js-{i:03d}" for i in range(n)],
        "ws": [f"ws-{i:03d}" for i in range(n)],
        "line": [f"line-{i:03d}" for i in range(n)],
    }
    every = {b for bodies in series.values() for b in bodies}

    # line receiver: every message once, each stream in order, seqs strictly increasing
    got_line: list = []
    deadline = time.monotonic() + 40
    while {m.text for m in got_line} < every:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"carol is missing {sorted(every - {m.text for m in got_line})[:20]}"
        m = parse_msg(carol.expect(re.compile(rf"^MSG {room} "), timeout=remaining))
        got_line.append(m)
    assert [m.seq for m in got_line] == sorted({m.seq for m in got_line}), "line: seqs out of order or repeated"

    # WebSocket receiver
    got_ws: list = []
    deadline = time.monotonic() + 40
    while {e["body"] for e in got_ws} < every:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"bob is missing {sorted(every - {e['body'] for e in got_ws})[:20]}"
        got_ws.append(bob.expect_envelope(room=room, kind="chat", timeout=remaining))
    assert [e["seq"] for e in got_ws] == sorted({e["seq"] for e in got_ws}), "ws: seqs out of order or repeated"

    # history: each message exactly once, each stream in order
    hist = chat_bodies(room_history(s, room))
    problems = []
    for name, bodies in series.items():
        mine = [b for b in hist if b in set(bodies)]
        if mine != bodies:
            dupes = sorted({b for b in mine if mine.count(b) > 1})
            missing = sorted(set(bodies) - set(mine))
            problems.append(f"history {name}: duplicates={dupes[:10]} missing={missing[:10]} "
                            f"in order={mine == sorted(mine)}")
        for label, seen in (("line", [m.text for m in got_line]), ("ws", [e["body"] for e in got_ws])):
            mine = [b for b in seen if b in set(bodies)]
            if mine != bodies:
                problems.append(f"{label} receiver {name}: got {len(mine)} of {len(bodies)}, "
                                f"in order={mine == sorted(mine)}")

    # the /out subscriber (persistent session, QoS 1): the WS and line streams, complete and in
    # order once QoS 1 duplicates are removed
    wanted = set(series["ws"]) | set(series["line"])
    seen_ids: dict[str, dict] = {}
    order: list[dict] = []
    deadline = time.monotonic() + 40
    while not wanted <= {e["body"] for e in order}:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            problems.append(f"/out is missing {sorted(wanted - {e['body'] for e in order})[:20]}")
            break
        try:
            m = out.next(timeout=remaining)
        except AssertionError:
            continue
        e = m.json()
        if e["id"] in seen_ids:
            assert seen_ids[e["id"]] == e, "a redelivered envelope differs"
            continue
        seen_ids[e["id"]] = e
        order.append(e)
    seqs = [e["seq"] for e in order]
    if seqs != sorted(seqs):
        where = [i for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1]]
        problems.append("/out not in seq order after dedup: " + "; ".join(
            f"... {seqs[max(0, i - 8):i + 3]} ..." for i in where[:3]))
    for name in ("ws", "line"):
        mine = [e["body"] for e in order if e["body"] in set(series[name])]
        if mine != series[name] and not any(p.startswith("/out is missing") for p in problems):
            problems.append(f"/out {name}: {mine}")
    assert not problems, "\n".join(problems)
    assert metric(s, "switchboard_mqtt_reconnects_total") >= 1


def test_gateway_restart_status_and_last_will(make_server, broker):
    watcher = MQTTClient(broker.port, "status-watch").connect()
    watcher.subscribe(STATUS)
    s = start_gateway(make_server, broker)
    m = watcher.expect(lambda m: m.topic == STATUS and m.text == "online", timeout=10, what="online")

    # kill -9: the broker publishes the last will
    s.kill9()
    m = watcher.expect(lambda m: m.topic == STATUS, timeout=15, what="the last will")
    assert m.text == "offline", m
    late = MQTTClient(broker.port, "late-watch").connect()
    late.subscribe(STATUS)
    r = late.expect(lambda m: m.topic == STATUS, timeout=5, what="the retained status")
    assert (r.text, r.retain) == ("offline", True), r

    # a device speaks while the gateway is down: its persistent session keeps it (QoS 1)
    dev = MQTTClient(broker.port, "sensor-1").connect()
    assert not dev.publish_wait(in_topic("lobby", "sensor-1"), "while you were out").is_failure

    s.start()
    wait_bridge_up(s)
    m = watcher.expect(lambda m: m.topic == STATUS, timeout=15, what="online again")
    assert m.text == "online", m
    problems = []
    line = s.client("alice")
    _, replay = line.join("lobby", since=0)
    if not any(x.endswith(" while you were out") for x in replay):
        try:
            line.expect_msg("lobby", "while you were out", user="sensor-1", timeout=10)
        except AssertionError as e:
            problems.append(f"the QoS 1 message sent while the gateway was down was not bridged: {e}")
    hist = chat_bodies(room_history(s, "lobby"))
    if not problems and hist.count("while you were out") != 1:
        problems.append(f"history: {hist}")

    # a graceful stop says offline itself
    assert s.stop() == 0
    m = watcher.expect(lambda m: m.topic == STATUS, timeout=15, what="offline on stop")
    assert m.text == "offline", m
    late2 = MQTTClient(broker.port, "late-watch-2").connect()
    late2.subscribe(STATUS)
    r = late2.expect(lambda m: m.topic == STATUS, timeout=5, what="the retained status")
    assert (r.text, r.retain) == ("offline", True), r
    assert not problems, "\n".join(problems)


def test_gateway_queues_while_broker_is_down(make_server, broker):
    s = start_gateway(make_server, broker)
    out = MQTTClient(broker.port, "out-persistent", persistent=True).connect()
    out.subscribe(out_topic("lobby"))
    line = s.client("alice")
    line.join("lobby")
    broker.stop()
    seqs = [line.say("lobby", f"queued-{i}") for i in range(20)]   # acked without the broker
    broker.start()
    got = []
    deadline = time.monotonic() + 30
    while len({e["seq"] for e in got} & set(seqs)) < len(seqs):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"/out got {[e['body'] for e in got]}"
        e = out.expect(lambda m: m.json()["kind"] == "chat", timeout=remaining).json()
        got.append(e)
    dedup = list(dict.fromkeys(e["seq"] for e in got))
    assert dedup == seqs, (dedup, seqs)


# --------------------------------------------------------------------------------------------
# The ACL


def test_acl_device_cannot_speak_for_another(make_server, make_broker):
    broker = make_broker(acl=True)
    s = start_gateway(make_server, broker, {"username": "switchboard",
                                            "password": EXAMPLE_PASSWORDS["switchboard"]})
    line = s.client("alice")
    line.join("lobby")
    sensor2 = MQTTClient(broker.port, "sensor-2", username="sensor-2").connect()
    sensor2.subscribe(out_topic("lobby"))

    sensor1 = MQTTClient(broker.port, "sensor-1", username="sensor-1").connect()
    rc = sensor1.publish_wait(in_topic("lobby", "sensor-2"), "forged by sensor-1")
    assert rc.is_failure and rc.value == 135, f"the broker accepted a forged sender: {rc}"
    # the CLI client is refused too
    r = broker.pub(in_topic("lobby", "sensor-2"), "forged by the CLI", user="sensor-1", extra=("-V", "mqttv5"))
    assert b"Not authorized" in r.stderr or r.returncode != 0, r
    # and a wrong password or no login gets no connection at all
    r = broker.pub(in_topic("lobby", "sensor-1"), "wrong password", user="sensor-1", password="nope")
    assert r.returncode != 0, r
    r = broker.pub(in_topic("lobby", "sensor-1"), "anonymous")
    assert r.returncode != 0, r

    assert not sensor1.publish_wait(in_topic("lobby", "sensor-1"), "genuine sensor-1").is_failure
    lines = line.lines_until(re.compile(r" genuine sensor-1$"), timeout=10)
    msgs = [parse_msg(x) for x in lines if x.startswith("MSG ")]
    assert [(m.user, m.text) for m in msgs] == [("sensor-1", "genuine sensor-1")], lines
    hist = chat_bodies(room_history(s, "lobby"))
    assert hist == ["genuine sensor-1"], hist
    # the gateway may write /out and the status, devices may read them
    env = sensor2.expect(lambda m: m.json().get("body") == "genuine sensor-1", timeout=10).json()
    assert env["from"] == {"user": "sensor-1", "via": "mqtt"}, env
    line.say("lobby", "hello sensors")
    sensor2.expect(lambda m: m.json().get("body") == "hello sensors", timeout=10)

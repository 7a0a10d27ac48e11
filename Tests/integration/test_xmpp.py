"""The XMPP listener (protocols/xmpp.md) against the real binary, with real clients: slixmpp
(STARTTLS, SCRAM, MUC, direct chat, disco, ping), Debian's sendxmpp (Net::XMPP) as a second,
different client, and a raw socket for the XML reader's limits (malformed XML, DOCTYPE and
entities, deep nesting, a 10 MiB stanza, an unclosed stream).

Every test starts its own server with `[xmpp] enabled = true` on a free port; line and
WebSocket clients share the rooms so each test checks what the other protocols see."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from swb import USERS, unique
from wsclient import ws_client
from xmpp_helpers import (NS, STREAM_HEADER, RawXMPP, XMPPClient, bare, resource, rss_kib,
                          stream_error_condition)

T = 10.0  # generous per-step timeout for cross-protocol delivery on a loaded machine
DOMAIN = "localhost"
MUC = f"conference.{DOMAIN}"


@pytest.fixture
def xserver(make_server):
    return make_server(xmpp={"enabled": True})


@pytest.fixture
def clients():
    """XMPP clients made by a test; all disconnected at the end."""
    made: list[XMPPClient] = []
    yield made
    for c in made:
        c.disconnect(timeout=3)


def xmpp(server, clients, user: str, connect: bool = True, **kw) -> XMPPClient:
    c = XMPPClient(server, user, timeout=T, **kw)
    clients.append(c)
    if connect:
        c.connect()
    return c


def room_jid(room: str) -> str:
    return f"{room}@{MUC}"


def groupchat_from(room: str, nick: str, body: str):
    """A predicate: a live groupchat message from room/nick with this body."""
    rj = room_jid(room)
    return lambda s: (s.name == "message" and s.type == "groupchat" and s.frm == f"{rj}/{nick}"
                      and s.body == body and s.delay is None)


def stamp_ms(stamp: str) -> int:
    """XEP-0082 date-time (with or without fraction, Z or offset) -> Unix ms."""
    s = stamp.replace("Z", "+00:00")
    return int(round(datetime.fromisoformat(s).timestamp() * 1000))


def cert_fingerprint(path) -> str:
    pem = path.read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def raw_features(data: bytes) -> bytes:
    m = re.search(rb"<stream:features>.*?</stream:features>", data, re.S)
    assert m, f"no stream features in {data[-1500:]!r}"
    return m.group(0)


def mechanisms(features: bytes) -> list[str]:
    return [m.decode() for m in re.findall(rb"<mechanism>([^<]+)</mechanism>", features)]


def stream_ids(data: bytes) -> list[str]:
    return [m.decode() for m in re.findall(rb"<stream:stream[^>]*\sid=['\"]([^'\"]+)['\"]", data)]


def plain_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"


def test_plain_refuses_an_authorization_identity_of_someone_else(xserver):
    """RFC 4616 / RFC 6120 §6.3.8: alice's password with authzid bob is `invalid-authzid`;
    her own JID as authzid is fine."""
    for authzid, answer in ((f"bob@{DOMAIN}", b"<invalid-authzid"), (f"alice@{DOMAIN}", b"<success")):
        r = RawXMPP(xserver.xmpp_port, timeout=T)
        r.open_stream()
        r.starttls()
        r.open_stream()
        token = base64.b64encode(f"{authzid}\0alice\0{USERS['alice']}".encode()).decode()
        r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        data = r.read_until(re.compile(rb"<success|<failure[^>]*>\s*<[a-z-]+"), T)
        assert answer in data, (authzid, data)
        r.close()


def raw_login(server, user: str = "alice", resource_: str = "raw") -> RawXMPP:
    """A raw connection through STARTTLS, SASL PLAIN and resource binding."""
    r = RawXMPP(server.xmpp_port, timeout=T)
    r.open_stream()
    r.starttls()
    r.open_stream()
    r.send(plain_auth(user, USERS[user]))
    r.read_until(b"<success", T)
    r.buf = bytearray()
    r.open_stream()
    r.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           f"<resource>{resource_}</resource></bind></iq>")
    r.read_until(re.compile(rb"<iq[^>]*id='b1'[^>]*>|<iq[^>]*id=\"b1\""), T)
    r.buf = bytearray()
    return r


# --------------------------------------------------------------------------------------------
# Stream negotiation and login


def test_starttls_and_scram_login(xserver, clients):
    c = xmpp(xserver, clients, "alice", connect=False)
    assert c.try_connect() == "session_start", f"login failed: {c._describe()}\n{c.dump()}"
    assert c.tls_active(), "slixmpp did not negotiate STARTTLS"
    assert c.mechanism() == "SCRAM-SHA-256", f"expected the strongest offered mechanism, got {c.mechanism()}"
    assert bare(c.jid) == f"alice@{DOMAIN}" and resource(c.jid), c.jid

    # The certificate is the generated self-signed one for <domain>, and its fingerprint is logged.
    crt = xserver.data_dir / f"xmpp-{DOMAIN}.crt"
    assert crt.is_file(), f"no generated certificate at {crt}"
    fp = cert_fingerprint(crt)
    assert c.peer_cert_sha256() == fp
    assert fp in xserver.log_text(), "the certificate's SHA-256 fingerprint is not in the log"

    # A client that pins that certificate and verifies the host name 'localhost' also gets in.
    v = xmpp(xserver, clients, "bob", cafile=str(crt))
    assert v.tls_active()
    # SCRAM-SHA-1 and PLAIN (over TLS) work as well.
    s1 = xmpp(xserver, clients, "carol", mech="SCRAM-SHA-1")
    assert s1.mechanism() == "SCRAM-SHA-1" and s1.tls_active()
    p = xmpp(xserver, clients, "alice", mech="PLAIN", resource="plain")
    assert p.mechanism() == "PLAIN" and p.tls_active()
    assert p.ping().type == "result"


def test_features_and_stream_restarts_raw(xserver):
    """What a client sees before and after STARTTLS: PLAIN only over TLS; every restart gets a
    new stream header (RFC 6120 §4.3.3/§5.4.3.3/§6.4.6: a new stream ID)."""
    r = RawXMPP(xserver.xmpp_port, timeout=T)
    before = r.open_stream()
    f1 = raw_features(before)
    assert b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'" in f1 or b'<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"' in f1, f1
    assert "PLAIN" not in mechanisms(f1), f"PLAIN offered without TLS: {f1!r}"
    assert {"SCRAM-SHA-256", "SCRAM-SHA-1"} <= set(mechanisms(f1)), f1
    assert not any(m.endswith("-PLUS") for m in mechanisms(f1)), f1
    ids = stream_ids(before)
    r.starttls()
    after_tls = r.open_stream()
    f2 = raw_features(after_tls)
    assert b"starttls" not in f2, f"STARTTLS offered again over TLS: {f2!r}"
    assert "PLAIN" in mechanisms(f2) and "SCRAM-SHA-256" in mechanisms(f2), f2
    ids += stream_ids(after_tls)
    r.send(plain_auth("alice", USERS["alice"]))
    r.read_until(b"<success", T)
    r.buf = bytearray()
    after_sasl = r.open_stream()
    f3 = raw_features(after_sasl)
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in f3 and b"mechanisms" not in f3, f3
    ids += stream_ids(after_sasl)
    r.close()
    assert len(ids) == 3, ids
    assert len(set(ids)) == 3, f"the stream ID did not change on restart (RFC 6120 requires a new one): {ids}"


def test_plain_login_refused_without_tls(xserver, clients):
    # raw: PLAIN is not offered, and trying it anyway is `encryption-required`.
    r = RawXMPP(xserver.xmpp_port, timeout=T)
    feats = raw_features(r.open_stream())
    assert "PLAIN" not in mechanisms(feats), feats
    r.buf = bytearray()
    r.send(plain_auth("alice", USERS["alice"]))
    data = r.read_until(b"</failure>", T)
    assert re.search(rb"<failure xmlns=['\"]urn:ietf:params:xml:ns:xmpp-sasl['\"]>\s*<encryption-required/>", data), data
    assert b"<success" not in data
    r.close()

    # slixmpp told not to use STARTTLS and to allow PLAIN in the clear cannot log in.
    c = xmpp(xserver, clients, "alice", connect=False, starttls=False, unencrypted_plain=True, mech="PLAIN")
    outcome = c.try_connect(timeout=T)
    assert outcome != "session_start", f"PLAIN login without TLS succeeded\n{c.dump()}"
    assert b"<success" not in b"".join(d for dirn, d in c.raw_log if dirn == "<<"), c.dump()


def test_plain_without_tls_when_allowed(make_server, clients):
    """`allow_plain_without_tls = true` (loopback tests): PLAIN is offered before STARTTLS."""
    s = make_server(xmpp={"enabled": True, "allow_plain_without_tls": True})
    r = RawXMPP(s.xmpp_port, timeout=T)
    assert "PLAIN" in mechanisms(raw_features(r.open_stream()))
    r.close()
    c = xmpp(s, clients, "alice", starttls=False, unencrypted_plain=True, mech="PLAIN")
    assert not c.tls_active() and c.mechanism() == "PLAIN"
    assert c.ping().type == "result"


def test_wrong_password_is_not_authorized(xserver, clients):
    c = xmpp(xserver, clients, "alice", connect=False, password="not-her-password", mech="SCRAM-SHA-256")
    outcome = c.try_connect(timeout=T)
    assert outcome in ("failed_auth", "failed_all_auth", "disconnected"), (outcome, c.dump())
    assert c.sasl_failures[:1] == ["not-authorized"], f"{c.sasl_failures}\n{c.dump()}"
    assert not c.has_event("session_start")

    # An unknown user gets the same answer (no user enumeration).
    u = XMPPClient(xserver, "mallory", password="x", mech="SCRAM-SHA-1", timeout=T)
    clients.append(u)
    u.try_connect(timeout=T)
    assert u.sasl_failures[:1] == ["not-authorized"], f"{u.sasl_failures}\n{u.dump()}"

    # The third failure on one stream is a policy-violation stream error.
    r = RawXMPP(xserver.xmpp_port, timeout=T)
    r.open_stream()
    r.starttls()
    r.open_stream()
    for i in range(2):
        r.send(plain_auth("alice", f"wrong-{i}"))
        data = r.read_until(re.compile(rb"(</failure>.*){%d}" % (i + 1), re.S), T)
        assert data.count(b"<not-authorized/>") == i + 1, data
    r.send(plain_auth("alice", "wrong-2"))
    data, closed = r.read_until_closed(T)
    assert stream_error_condition(data) == "policy-violation", data[-800:]
    assert closed and data.rstrip().endswith(b"</stream:stream>"), data[-300:]

    # And the right password still works.
    xmpp(xserver, clients, "alice")


# --------------------------------------------------------------------------------------------
# Multi-user chat


def test_muc_with_line_and_websocket_clients(xserver, clients):
    room = "lobby"
    line = xserver.client("bob", name="bob-line", timeout=T)
    line.join(room)
    ws = ws_client(xserver, "carol", name="carol-ws", timeout=T)
    ws.join(room)

    alice = xmpp(xserver, clients, "alice")
    j = alice.join_muc(room, "alice")
    rj = room_jid(room)
    assert j.error is None, j.error
    # The occupant list: one presence per participant, nick = user name, before the self-presence.
    nicks = sorted(j.occupant_nicks())
    assert "bob" in nicks and "carol" in nicks, f"occupants {nicks}: {j.occupants}"
    assert {110, 100} <= j.self_presence.statuses, j.self_presence
    assert j.self_presence.frm == f"{rj}/alice", j.self_presence
    assert j.subject is not None

    # Others see alice join, as an xmpp occupant.
    line.expect(f"JOINED {room} alice xmpp", timeout=T)
    ws.expect_envelope(room=room, kind="join", user="alice", via="xmpp", timeout=T)

    # XMPP -> line and WebSocket
    text = unique("from-xmpp")
    sid = alice.send_groupchat(room, text)
    m = line.expect_msg(room, text, user="alice", timeout=T)
    assert m.via == "xmpp", m
    assert f"MSG {room} {m.seq} {m.ts} alice xmpp {text}" in line.history, line.history[-5:]
    env = ws.expect_envelope(room=room, body=text, timeout=T)
    assert env["from"]["user"] == "alice" and env["from"]["via"] == "xmpp", env
    assert env["seq"] == m.seq and env["kind"] == "chat", env
    assert env.get("client_id") == sid, f"origin-id {sid} is not the envelope's client_id: {env}"

    # The reflection to the sender: from the room with alice's nick, with stanza-id = envelope id.
    refl = alice.expect_message(groupchat_from(room, "alice", text), "reflection", timeout=T)
    assert (rj, env["id"]) in refl.stanza_ids(), refl

    # line -> XMPP and WebSocket -> XMPP
    from_line = unique("from-line")
    seq_line = line.say(room, from_line)
    got = alice.expect_message(groupchat_from(room, "bob", from_line), "line message", timeout=T)
    ack = ws.say(room, "from ws: ünïcødé <&>")
    got_ws = alice.expect_message(groupchat_from(room, "carol", "from ws: ünïcødé <&>"), "ws message", timeout=T)
    assert (rj, ack["id"]) in got_ws.stanza_ids(), got_ws
    assert any(by == rj for by, _ in got.stanza_ids()), got

    # Exactly one reflection of alice's message: everything up to the ws message holds one.
    copies = [s for s in alice.received if s.name == "message" and s.body == text]
    assert len(copies) == 1, f"alice got her message {len(copies)} times: {copies}"
    ws_copies = [e for e in ws.history if e.get("op") == "envelope" and e["envelope"].get("body") == text]
    assert len(ws_copies) == 1, ws_copies
    assert seq_line == m.seq + 1 and ack["seq"] == seq_line + 1, (m.seq, seq_line, ack)

    # Occupants leaving arrive as unavailable presences.
    line.cmd(f"PART {room}")
    alice.expect_presence(lambda s: s.frm == f"{rj}/bob" and s.type == "unavailable", "bob leaving", timeout=T)

    # alice leaves: self-presence unavailable with 110; carol sees the leave envelope.
    left = alice.leave_muc(room, "alice")
    assert 110 in left.statuses, left
    ws.expect_envelope(room=room, kind="leave", user="alice", via="xmpp", timeout=T)


def test_xmpp_occupants_see_each_other(xserver, clients):
    room = unique("muc").lower()
    alice = xmpp(xserver, clients, "alice")
    bob = xmpp(xserver, clients, "bob")
    alice.join_muc(room, "alice")
    jb = bob.join_muc(room, "bob")
    assert jb.occupant_nicks() == ["alice"], jb.occupants
    # alice sees bob's join presence
    alice.expect_presence(lambda s: s.frm == f"{room_jid(room)}/bob" and s.type is None, "bob's presence", timeout=T)
    bob.send_groupchat(room, "hi alice")
    alice.expect_message(groupchat_from(room, "bob", "hi alice"), timeout=T)
    bob.expect_message(groupchat_from(room, "bob", "hi alice"), "reflection", timeout=T)
    # Closing the stream leaves every room.
    bob.disconnect()
    alice.expect_presence(lambda s: s.frm == f"{room_jid(room)}/bob" and s.type == "unavailable",
                          "bob gone after closing his stream", timeout=T)


def test_a_groupchat_right_behind_its_join_is_handled_in_order(xserver, clients):
    """RFC 6120 §10.1: a join presence and a groupchat message sent in one write are handled in
    order: the message finds the room joined (no `not-acceptable`), after the self-presence."""
    alice = xmpp(xserver, clients, "alice")
    rj = room_jid("pipelined")
    text = unique("right-behind")
    alice.send_raw(f"<presence to='{rj}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
                   f"<message to='{rj}' type='groupchat' id='g1'><body>{text}</body></message>"
                   f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.expect_message(groupchat_from("pipelined", "alice", text), "reflection", timeout=T)
    assert not alice.take_all(lambda s: s.type == "error"), "an error answered a stanza sent behind the join"


def test_presence_to_a_malformed_or_foreign_room_is_answered(xserver, clients):
    """A join with an empty nick is jid-malformed; a join on another server (no federation) is
    remote-server-not-found; neither is met with silence."""
    alice = xmpp(xserver, clients, "alice")
    for to, condition in ((f"{room_jid('lobby')}/", "jid-malformed"),
                          ("lobby@conference.example.org/alice", "remote-server-not-found")):
        alice.send_raw(f"<presence to='{to}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        err = alice.expect_presence(lambda s: s.type == "error", f"an error for {to}", timeout=T)
        assert err.error_condition == condition, (to, err)


def test_history_on_join(xserver, clients):
    room = unique("hist").lower()
    ws = ws_client(xserver, "carol", timeout=T)
    ws.join(room)
    acks = [ws.say(room, f"old {i}") for i in range(5)]

    alice = xmpp(xserver, clients, "alice")
    j = alice.join_muc(room, "alice")      # default: the last 20 messages
    bodies = [h.body for h in j.history]
    assert bodies == [f"old {i}" for i in range(5)], f"history {bodies}: {j.history}"
    for h, ack in zip(j.history, acks):
        assert h.frm == f"{room_jid(room)}/carol" and h.type == "groupchat", h
        assert h.delay is not None, f"history without <delay>: {h}"
        assert abs(stamp_ms(h.delay) - ack["ts"]) <= 1, (h.delay, ack["ts"])
        assert (room_jid(room), ack["id"]) in h.stanza_ids(), h

    # alice's own message: reflected once; in history once when she comes back.
    text = unique("mine")
    alice.send_groupchat(room, text)
    alice.expect_message(groupchat_from(room, "alice", text), "reflection", timeout=T)
    ws.expect_envelope(room=room, body=text, timeout=T)
    alice.leave_muc(room, "alice")
    j2 = alice.join_muc(room, "alice")
    bodies2 = [h.body for h in j2.history]
    assert bodies2 == [f"old {i}" for i in range(5)] + [text], bodies2
    mine = j2.history[-1]
    assert mine.frm == f"{room_jid(room)}/alice" and mine.delay is not None, mine
    live = [s for s in alice.received if s.name == "message" and s.body == text]
    assert len(live) == 2, f"one reflection + one history copy expected: {live}"

    # maxstanzas='0' and maxchars='0': no history.
    bob = xmpp(xserver, clients, "bob")
    assert bob.join_muc(room, "bob", maxstanzas=0).history == []
    carol = xmpp(xserver, clients, "carol", resource="x")
    assert carol.join_muc(room, "carol", maxchars=0).history == []


def test_history_maxstanzas_counts_messages(xserver, clients):
    """XEP-0045 §7.2.14: maxstanzas limits the number of *messages* sent; the joins and leaves
    in the room (which are not sent as history messages) must not use up the count."""
    room = unique("maxst").lower()
    ws = ws_client(xserver, "carol", timeout=T)
    ws.join(room)
    for i in range(5):
        ws.say(room, f"old {i}")
    alice = xmpp(xserver, clients, "alice")
    got = {}
    for n in (3, 5, 1):
        j = alice.join_muc(room, "alice", maxstanzas=n)
        got[n] = [h.body for h in j.history]
        alice.leave_muc(room, "alice")
    assert got == {3: ["old 2", "old 3", "old 4"], 5: [f"old {i}" for i in range(5)], 1: ["old 4"]}, got


def test_room_subject(xserver, clients):
    """XEP-0045 §8.1: a subject change reaches every occupant (other protocols see a system
    message) and ends the join of whoever comes later."""
    room = unique("subj").lower()
    line = xserver.client("bob")
    line.join(room)
    alice = xmpp(xserver, clients, "alice")
    first = alice.join_muc(room, "alice")
    assert first.subject is not None and first.subject.subject in (None, ""), first.subject
    el = alice._element("message", to=alice.room_jid(room), type="groupchat", id="subject-1")
    ET.SubElement(el, "{jabber:client}subject").text = "Quarterly planning"
    alice.send_xml(el)
    echo = alice.expect_message(lambda s: s.subject == "Quarterly planning" and s.body is None, "subject reflection",
                                timeout=T)
    assert echo.frm == f"{room_jid(room)}/alice", echo
    line.expect(re.compile(rf"^MSG {room} \d+ -?\d+ alice xmpp \[system\] Quarterly planning$"), timeout=T)
    alice.send_groupchat(room, "after the subject")
    line.expect(re.compile(rf"^MSG {room} \d+ -?\d+ alice xmpp after the subject$"), timeout=T)

    carol = xmpp(xserver, clients, "carol")
    joined = carol.join_muc(room, "carol")
    assert joined.subject.subject == "Quarterly planning", joined.subject
    assert joined.subject.frm == f"{room_jid(room)}/alice", joined.subject
    assert [h.body for h in joined.history] == ["after the subject"], joined.history


def test_nick_conflict_and_assigned_nick(xserver, clients):
    room = unique("nick").lower()
    line = xserver.client("bob", timeout=T)
    line.join(room)
    bob_x = xmpp(xserver, clients, "carol")
    bob_x.join_muc(room, "carol")

    alice = xmpp(xserver, clients, "alice")
    # another user's name: 409 conflict (bob is there over line, carol over XMPP)
    for taken in ("bob", "carol"):
        j = alice.join_muc(room, taken, expect_error=True)
        assert j.error is not None, f"joining as {taken} did not fail: {j.all}"
        assert j.error.type == "error" and j.error.error_condition == "conflict", j.error
        assert j.error.frm == f"{room_jid(room)}/{taken}", j.error
        err = j.error.find("c:error")
        assert err.get("type") == "cancel" and err.get("code") in (None, "409"), j.error

    # any other nick: the service assigns the user name (status 210)
    j = alice.join_muc(room, "wonderland")
    assert j.self_presence.frm == f"{room_jid(room)}/alice", j.self_presence
    assert {110, 210} <= j.self_presence.statuses, j.self_presence
    line.expect(f"JOINED {room} alice xmpp", timeout=T)
    # the refused joins did not enter the room: this is the only JOINED for alice
    assert [x for x in line.history if x.startswith(f"JOINED {room} alice")] == [f"JOINED {room} alice xmpp"], \
        line.history


def test_direct_chat_with_websocket_and_line_user(xserver, clients):
    bob_ws = ws_client(xserver, "bob", name="bob-ws", timeout=T)
    bob_line = xserver.client("bob", name="bob-line", timeout=T)
    alice = xmpp(xserver, clients, "alice")

    alice.send_chat(f"bob@{DOMAIN}", "psst, bob")
    env = bob_ws.expect_envelope(room="dm.alice.bob", body="psst, bob", timeout=T)
    assert env["from"]["user"] == "alice" and env["from"]["via"] == "xmpp", env
    m = bob_line.expect_msg("dm.alice.bob", "psst, bob", user="alice", timeout=T)
    assert (m.via, m.seq) == ("xmpp", env["seq"]), m

    bob_ws.send({"op": "send", "to": "alice", "body": "hi alice, from ws", "client_id": "dm-1"})
    bob_ws.expect("ack", client_id="dm-1", timeout=T)
    got = alice.expect_message(lambda s: s.body == "hi alice, from ws", "chat from bob", timeout=T)
    assert got.type == "chat" and bare(got.frm) == f"bob@{DOMAIN}", got
    assert bare(got.to) == f"alice@{DOMAIN}", got

    bob_line.tell("alice", "and from line")
    got2 = alice.expect_message(lambda s: s.body == "and from line", "chat from bob (line)", timeout=T)
    assert got2.type == "chat" and bare(got2.frm) == f"bob@{DOMAIN}", got2

    # a groupchat message to a user's JID is bounced, not delivered as a chat (RFC 6121 §8.5.2.1.1)
    el = alice._element("message", to=f"bob@{DOMAIN}", type="groupchat", id="gc-to-user")
    ET.SubElement(el, "{jabber:client}body").text = "not a room"
    alice.send_xml(el)
    err = alice.expect_message(lambda s: s.id == "gc-to-user" and s.type == "error", "error for groupchat to a user", timeout=T)
    assert err.error_condition == "service-unavailable", err
    assert not [l for l in bob_line.drain(1.0) if "not a room" in l]

    # unknown user: item-not-found
    sid = alice.send_chat(f"nobody@{DOMAIN}", "hello?")
    err = alice.expect_message(lambda s: s.id == sid and s.type == "error", "error for nobody", timeout=T)
    assert err.error_condition == "item-not-found", err


def test_disco_lists_rooms(xserver, clients):
    line = xserver.client("bob", timeout=T)
    extra = unique("disco").lower()
    line.join("lobby")
    line.join(extra)
    alice = xmpp(xserver, clients, "alice")

    items = alice.disco_items(DOMAIN)
    assert MUC in [jid for jid, _, _ in items], items
    rooms = [jid for jid, _, _ in alice.disco_items(MUC)]
    assert room_jid("lobby") in rooms and room_jid(extra) in rooms, rooms
    assert not any(j.startswith("dm.") for j in rooms), rooms

    idents, feats = alice.disco_info(MUC)
    assert any(i.get("category") == "conference" for i in idents), idents
    assert NS["muc"] in feats, feats
    idents, feats = alice.disco_info(room_jid(extra))
    assert any(i.get("category") == "conference" for i in idents), idents
    assert {NS["muc"], "muc_persistent", "urn:xmpp:sid:0"} <= feats, feats
    # a room nobody created or joined does not exist (XEP-0045 §6.4), nor does a reserved name
    for made_up in (room_jid(unique("never").lower()), room_jid("dm.alice.bob")):
        r = alice.iq("get", made_up, ET.Element(f"{{{NS['disco_info']}}}query"))
        assert r.type == "error" and r.error_condition == "item-not-found", (made_up, r)
    _, feats = alice.disco_info(DOMAIN)
    assert NS["disco_info"] in feats or NS["disco_items"] in feats, feats


def test_ping_roster_and_unknown_iq(xserver, clients):
    alice = xmpp(xserver, clients, "alice")
    r = alice.ping()
    assert r.type == "result", r
    r2 = alice.ping(jid=None)
    assert r2.type == "result" and r2.id != r.id
    # XEP-0199 without `to` is a ping of the server too
    el = alice._element("iq", type="get", id="p-noto")
    el.append(ET.Element(f"{{{NS['ping']}}}ping"))
    alice.send_xml(el)
    assert alice.first(lambda s: s.name == "iq" and s.id == "p-noto", "ping without to", timeout=T).type == "result"
    # roster: empty
    roster = alice.iq("get", None, ET.Element("{jabber:iq:roster}query"))
    assert roster.type == "result" and roster.find("{jabber:iq:roster}query") is not None, roster
    # anything else: service-unavailable
    v = alice.iq("get", DOMAIN, ET.Element("{jabber:iq:version-unknown}query"))
    assert v.type == "error" and v.error_condition == "service-unavailable", v
    # the presence without `to` is echoed to the sender's own resource
    alice.send_presence()
    p = alice.expect_presence(lambda s: bare(s.frm) == f"alice@{DOMAIN}", "own presence echo", timeout=T)
    assert p.type is None, p


# --------------------------------------------------------------------------------------------
# A second, different client: sendxmpp (Perl Net::XMPP)


SENDXMPP = shutil.which("sendxmpp")


def run_sendxmpp(server, tmp_path, user: str, recipient: str, text: str, chatroom: bool,
                 extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    msg = tmp_path / f"msg-{unique()}.txt"
    msg.write_text(text)  # no trailing newline (stdin would add one to the body)
    args = [SENDXMPP, "-u", user, "-p", USERS[user], "-j", f"localhost:{server.xmpp_port}",
            "-t", "-n",                  # STARTTLS, the certificate is self-signed
            "-r", "sendxmpp", "-m", str(msg), *extra]
    if chatroom:
        args.append("-c")
    args.append(recipient)
    # HOME: sendxmpp reads ~/.sendxmpprc when -u/-p are missing; keep the real one out.
    return subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


@pytest.mark.skipif(SENDXMPP is None, reason="needs Debian's sendxmpp (make test-deps)")
def test_sendxmpp_into_a_room(xserver, clients, tmp_path):
    room = "lobby"
    line = xserver.client("carol", timeout=T)
    line.join(room)
    ws = ws_client(xserver, "bob", name="bob-ws", timeout=T)
    ws.join(room)
    watcher = xmpp(xserver, clients, "bob", resource="watch")
    watcher.join_muc(room, "bob")

    text = unique("hello from sendxmpp")
    r = run_sendxmpp(xserver, tmp_path, "alice", room_jid(room), text, chatroom=True)
    assert r.returncode == 0, f"sendxmpp failed rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"

    m = line.expect_msg(room, text, user="alice", timeout=T)
    assert m.via == "xmpp", m
    env = ws.expect_envelope(room=room, body=text, timeout=T)
    assert env["from"] == {"user": "alice", "via": "xmpp"} or (
        env["from"]["user"] == "alice" and env["from"]["via"] == "xmpp"), env
    got = watcher.expect_message(groupchat_from(room, "alice", text), "sendxmpp's message", timeout=T)
    assert (room_jid(room), env["id"]) in got.stanza_ids(), got
    # sendxmpp joined (presence without <x/>), so the room saw it come and go
    line.expect(f"JOINED {room} alice xmpp", timeout=T)
    line.expect(f"PARTED {room} alice xmpp", timeout=T)

    # and a 1:1 message to a WebSocket user
    text2 = unique("direct from sendxmpp")
    r = run_sendxmpp(xserver, tmp_path, "alice", f"bob@{DOMAIN}", text2, chatroom=False,
                     extra=("--message-type", "chat"))
    assert r.returncode == 0, f"sendxmpp failed rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    env = ws.expect_envelope(room="dm.alice.bob", body=text2, timeout=T)
    assert env["from"]["via"] == "xmpp", env


# --------------------------------------------------------------------------------------------
# The XML reader's limits


LOL = ("<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
       + "".join(f"<!ENTITY lol{i} '{('&lol%s;' % (i - 1 if i > 1 else '')) * 10}'>" for i in range(1, 10))
       + "]>")
HEADER = STREAM_HEADER.format(domain=DOMAIN)
XMLDECL = "<?xml version='1.0'?>"

BAD_INPUT = {
    "malformed": ([HEADER, "<message><body>x</message>"], "not-well-formed"),
    "billion-laughs-before-stream": ([XMLDECL + LOL + HEADER[len(XMLDECL):]], "restricted-xml"),
    "billion-laughs-in-stream": ([HEADER, LOL + "<message><body>&lol9;</body></message>"], "restricted-xml"),
    "entity-reference": ([HEADER, "<message to='bob@localhost'><body>&lol;</body></message>"], "restricted-xml"),
    "comment": ([HEADER, "<!-- hello -->"], "restricted-xml"),
    "processing-instruction": ([HEADER, "<?evil instruction?>"], "restricted-xml"),
    "nested-10000": ([HEADER, "<message>" + "<a>" * 10000], "policy-violation"),
    "attributes-100": ([HEADER, "<message " + " ".join(f"a{i}='x'" for i in range(100)) + "/>"], "policy-violation"),
    "invalid-utf8": ([HEADER, b"<message><body>\xff\xfe</body></message>"], "unsupported-encoding"),
}


def assert_stream_error(data: bytes, closed: bool, condition: str, header: bool = True) -> None:
    """`data` holds a <stream:error> with `condition`, `</stream:stream>`, then EOF; with
    header, also the server's stream header (RFC 6120 §4.9.1.1: sent even when the error is
    about the client's header)."""
    assert stream_error_condition(data) == condition, \
        f"expected <{condition}/>, got {stream_error_condition(data)}: {data[-800:]!r}"
    if header:
        assert re.search(rb"<stream:stream\s", data), f"no stream header before the error: {data[:300]!r}"
    assert data.rstrip().endswith(b"</stream:stream>"), f"the stream was not closed: {data[-300:]!r}"
    assert closed, "the server did not close the connection after the stream error"


def still_serving(server, clients, witness: XMPPClient, room: str) -> None:
    """The server keeps serving: the client connected before still works, a new one logs in,
    and a line client chats."""
    assert server.running(), server.log_text()
    assert witness.ping().type == "result"
    fresh = xmpp(server, clients, "carol", resource=unique("fresh"))
    fresh.join_muc(room, "carol")
    line = server.client("bob", timeout=T)
    line.join(room)
    line.say(room, "still here")
    witness.expect_message(groupchat_from(room, "bob", "still here"), timeout=T)
    fresh.expect_message(groupchat_from(room, "bob", "still here"), timeout=T)
    line.close()


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_xml_is_a_stream_error(xserver, clients, case):
    parts, condition = BAD_INPUT[case]
    room = "lobby"
    witness = xmpp(xserver, clients, "alice")
    witness.join_muc(room, "alice")

    r = RawXMPP(xserver.xmpp_port, timeout=T)
    for p in parts:
        r.send(p)
    data, closed = r.read_until_closed(T)
    r.close()
    assert_stream_error(data, closed, condition)
    still_serving(xserver, clients, witness, room)


def test_bad_xml_after_login(xserver, clients):
    """The same reader guards an authenticated stream (over TLS); the session leaves its rooms."""
    line = xserver.client("bob", timeout=T)
    line.join("lobby")
    r = raw_login(xserver, "alice")
    r.send("<presence to='lobby@conference.localhost/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    r.read_until(re.compile(rb"code=['\"]110['\"]"), T)
    line.expect("JOINED lobby alice xmpp", timeout=T)
    r.send(LOL)
    data, closed = r.read_until_closed(T)
    assert_stream_error(data, closed, "restricted-xml", header=False)
    line.expect("PARTED lobby alice xmpp", timeout=T)


def _send_big(server, r: RawXMPP, payload: bytes) -> tuple[bytes, bool, int, int]:
    """Sends payload while reading the answer; a thread samples the server's RSS meanwhile.
    Returns (answer, closed, rss before KiB, peak rss KiB)."""
    pid = server.proc.pid
    before = rss_kib(pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], rss_kib(pid))
            except (OSError, AssertionError):
                return
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        data, closed = r.send_while_reading(payload, timeout=60)
    finally:
        done.set()
        sampler.join(5)
    peak[0] = max(peak[0], rss_kib(pid))
    return data, closed, before, peak[0]


@pytest.mark.parametrize("when", ["before-auth", "after-auth"])
def test_ten_mib_stanza(xserver, clients, when):
    witness = xmpp(xserver, clients, "bob")
    witness.join_muc("lobby", "bob")
    if when == "before-auth":
        r = RawXMPP(xserver.xmpp_port, timeout=T)
        r.open_stream()
    else:
        r = raw_login(xserver, "alice")
    body = b"A" * (10 << 20)
    payload = b"<message to='lobby@conference.localhost' type='groupchat'><body>" + body + b"</body></message>"
    data, closed, before, peak = _send_big(xserver, r, payload)
    reset = r.reset
    r.close()
    assert_stream_error(data, closed, "policy-violation", header=(when == "before-auth"))
    # RFC 6120 §4.4: the server shuts its side and lets the client finish, instead of a reset
    # that could discard the error before the client has read it
    assert not reset, "the server reset the connection instead of closing it"
    growth_mib = (peak - before) / 1024
    assert growth_mib < 50, f"RSS grew by {growth_mib:.1f} MiB ({before} -> {peak} KiB) for a 10 MiB stanza"
    still_serving(xserver, clients, witness, "lobby")
    # nothing of it was published
    assert not [s for s in witness.received if s.name == "message" and (s.body or "").startswith("AAAA")]


def test_unclosed_stream_times_out(make_server, clients):
    """A stream that is opened and never continued gets `connection-timeout`; one cut in the
    middle of a stanza is cleaned up; the server serves others meanwhile."""
    s = make_server(xmpp={"enabled": True, "idle_timeout_seconds": 2})
    idle = RawXMPP(s.xmpp_port, timeout=T)
    idle.open_stream()
    half = RawXMPP(s.xmpp_port, timeout=T)
    half.open_stream()
    half.send("<message to='bob@localhost'><body>never fini")
    half.sock.shutdown(socket.SHUT_WR)          # EOF in the middle of a stanza
    data_half, closed_half = half.read_until_closed(T)
    assert closed_half, f"the server kept a half-closed stream open: {data_half[-300:]!r}"

    # meanwhile a real client works (the idle stream's timer is running)
    c = xmpp(s, clients, "alice")
    assert c.ping().type == "result"

    t0 = time.monotonic()
    data, closed = idle.read_until_closed(15)
    waited = time.monotonic() - t0
    assert_stream_error(data, closed, "connection-timeout")
    assert waited < 12, f"closed after {waited:.1f}s with idle_timeout_seconds = 2"

    # A client that keeps talking (whitespace keepalives) is not timed out.
    k = RawXMPP(s.xmpp_port, timeout=T)
    k.open_stream()
    k.buf = bytearray()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        k.send(" ")
        try:
            k._recv_some(time.monotonic() + 0.5)
        except TimeoutError:
            pass
        assert not k.eof, f"closed despite keepalives: {bytes(k.buf)!r}"
    k.close()


# --------------------------------------------------------------------------------------------
# Concurrent joins


def test_concurrent_joins_announce_each_occupant_once(make_server):
    """20 clients join one room at the same moment: each sees every other occupant's available
    presence exactly once (XEP-0045 §7.2.3), whether it came in its occupant list or as the
    other's join (the list is read when a join is handled, and may already hold occupants whose
    join is still on its way; those are not announced again)."""
    n = 20
    users = {f"u{i:02d}": f"pw-{i}" for i in range(n)}
    s = make_server(users=users, xmpp={"enabled": True, "allow_plain_without_tls": True})
    room = unique("crowd").lower()
    rj = room_jid(room)

    def login(user: str) -> RawXMPP:
        r = RawXMPP(s.xmpp_port, timeout=T)
        r.open_stream()
        token = base64.b64encode(f"\0{user}\0{users[user]}".encode()).decode()
        r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        r.read_until(b"<success", T)
        r.open_stream()
        r.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<resource>crowd</resource></bind></iq>")
        r.read_until(re.compile(rb"<iq[^>]*id='b1'"), T)
        r.buf = bytearray()
        return r

    conns: dict[str, RawXMPP] = {}
    # Everyone logs in, then all send their join at the same moment.
    start = threading.Barrier(n)
    errors: list[str] = []

    def join(user: str) -> None:
        try:
            r = conns[user] = login(user)
            start.wait(T)
            r.send(f"<presence to='{rj}/{user}'><x xmlns='http://jabber.org/protocol/muc'>"
                   "<history maxstanzas='0'/></x></presence>")
            # The join ends with the subject; then everyone's presence arrives sooner or later.
            r.read_until(b"<subject", T)
            others = set(users) - {user}
            r.read_until(re.compile(
                b"".join(b"(?=.*<presence from='" + re.escape(f"{rj}/{o}'".encode()) + b")" for o in sorted(others)),
                re.S), T)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{user}: {e}")

    threads = [threading.Thread(target=join, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * T)
    assert not errors, errors
    assert len(conns) == n
    # Late duplicates would come right after: give them time, with a final round trip as a fence.
    time.sleep(1.0)
    counts: dict[str, dict[str, int]] = {}
    for user, r in conns.items():
        r.send("<iq type='get' id='fence'><ping xmlns='urn:xmpp:ping'/></iq>")
        r.read_until(re.compile(rb"<iq[^>]*id='fence'"), T)
        seen: dict[str, int] = {}
        for m in re.finditer(b"<presence from='" + re.escape(rj.encode()) + b"/([^']+)'", bytes(r.buf)):
            nick = m.group(1).decode()
            if nick != user:
                seen[nick] = seen.get(nick, 0) + 1
        counts[user] = seen
    wrong = {u: {o: c for o, c in seen.items() if c != 1} for u, seen in counts.items()}
    wrong = {u: w for u, w in wrong.items() if w}
    missing = {u: sorted(set(users) - {u} - set(seen)) for u, seen in counts.items() if set(users) - {u} - set(seen)}
    total = sum(sum(seen.values()) for seen in counts.values())
    assert not wrong and not missing, (f"{total} occupant presences instead of {n * (n - 1)}; "
                                       f"repeated: {wrong}; missing: {missing}")
    for r in conns.values():
        r.close()

"""Validates the sipp scenarios of Tests/sip/scenarios (and the Python SIP client of
Tests/integration/sip_helpers.py) against Kamailio, the reference registrar/proxy
(Tests/bench/peers/kamailio.cfg). Independent of Switchboard:

    python3 -m pytest -q Tests/sip/test_scenarios_kamailio.py

Needs Debian's sip-tester, kamailio (and baresip for the last test). Each test starts its own
Kamailio on a free loopback port with its own db_text folder, and stops it (no system service).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from sip_helpers import (Baresip, Kamailio, SIPClient, Sipp, bindings, challenges,  # noqa: E402
                         register_from_port)

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@pytest.fixture
def kam(tmp_path, request):
    k = Kamailio(tmp_path / "kamailio", USERS).start()
    yield k
    k.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(k.log_text())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def row(user, target="", expires=3600, body=None, password=None):
    return (user, password or USERS[user], "localhost", target, expires, body)


def sipp(tmp_path, scenario, k, **kw) -> Sipp:
    return Sipp(tmp_path, scenario, k.port, **kw)


def test_register(tmp_path, kam):
    s = sipp(tmp_path, "register.xml", kam, rows=[row("alice")])
    s.run()
    s.assert_ok()
    assert any("registered alice" in l and "expires=" in l for l in s.logs()), s.describe()


def test_register_wrong_password(tmp_path, kam):
    s = sipp(tmp_path, "register_wrong_password.xml", kam, rows=[row("alice", password="nope")])
    s.run()
    s.assert_ok()
    # and register.xml with that password fails
    s2 = sipp(tmp_path, "register.xml", kam, rows=[row("alice", password="nope")])
    assert s2.run() != 0, s2.describe()


def test_register_expires(tmp_path, kam):
    s = sipp(tmp_path, "register_expires.xml", kam, rows=[row("alice")])
    s.run()
    s.assert_ok()
    assert any("Min-Expires: 60" in l for l in s.logs()), s.describe()


def test_python_client_md5_and_sha256(tmp_path):
    for sha in (False, True):
        k = Kamailio(tmp_path / f"k{int(sha)}", USERS, sha256=sha).start()
        try:
            with SIPClient(k.port, user="alice", password="alice-pw") as c:
                data, _, cseq = c.build("REGISTER", "sip:localhost", headers=["Expires: 60"])
                c.send_raw(data)
                r = c.expect_response(cseq=cseq)
                assert r.status == 401
                assert challenges(r)[0].get("algorithm", "MD5") == ("SHA-256" if sha else "MD5")
                r = c.register(60)
                assert r.status == 200, r
                assert bindings(r) == {c.contact_uri: 60}
                bad = c.register(60, password="wrong")
                assert bad.status == 401
        finally:
            k.stop()


def test_call(tmp_path, kam):
    register_from_port(kam.port, "alice", USERS["alice"], (a := Sipp(tmp_path, "uac_call.xml", kam.port, rows=[row("alice", "bob")], duration_ms=500)).port)
    bob = Sipp(tmp_path, "uas_call.xml", kam.port)
    register_from_port(kam.port, "bob", USERS["bob"], bob.port)
    bob.start().wait_listening()
    a.run()
    a.assert_ok()
    bob.wait()
    bob.assert_ok()
    got = [m.status for m in a.received() if m.is_response and m.cseq[1] == "INVITE"]
    assert 180 in got and got[-1] == 200, a.describe()


def test_call_407_and_ooc_uas(tmp_path, kam):
    """alice's socket is not registered (407, answered); bob REGISTERs and waits in one sipp."""
    bob = Sipp(tmp_path, "register_wait.xml", kam.port, rows=[row("bob")], ooc="uas_call.xml", duration_ms=4000)
    bob.start()
    import time
    time.sleep(1.0)
    a = Sipp(tmp_path, "uac_call.xml", kam.port, rows=[row("alice", "bob")], duration_ms=300)
    a.run()
    a.assert_ok()
    assert a.received(407), a.describe()
    bob.wait()
    bob.assert_ok()


def test_cancel(tmp_path, kam):
    a = Sipp(tmp_path, "uac_cancel.xml", kam.port, rows=[row("alice", "bob")])
    register_from_port(kam.port, "alice", USERS["alice"], a.port)
    bob = Sipp(tmp_path, "uas_ring_cancel.xml", kam.port)
    register_from_port(kam.port, "bob", USERS["bob"], bob.port)
    bob.start().wait_listening()
    a.run()
    a.assert_ok()
    bob.wait()
    bob.assert_ok()
    assert a.received(487), a.describe()


def test_unregistered_and_unknown(tmp_path, kam):
    a = Sipp(tmp_path, "uac_unregistered.xml", kam.port, rows=[row("alice", "carol")])
    register_from_port(kam.port, "alice", USERS["alice"], a.port)
    a.run()
    a.assert_ok()
    u = Sipp(tmp_path, "uac_unknown_user.xml", kam.port, rows=[row("alice", "nobody")], port=a.port)
    u.run()
    u.assert_ok()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_message_room(tmp_path, kam, transport):
    s = sipp(tmp_path, "message_room.xml", kam, rows=[row("alice", "lobby", body="hi room")], transport=transport)
    s.run()
    s.assert_ok()
    m = [x for x in s.messages() if x.direction == "sent" and not x.is_response and x.method == "MESSAGE"]
    assert m and m[-1].text.strip() == "hi room", s.describe()


def test_message_room_noreg(tmp_path, kam):
    s = sipp(tmp_path, "message_room.xml", kam, rows=[row("alice", "lobby")], sets={"noreg": 1})
    register_from_port(kam.port, "alice", USERS["alice"], s.port)
    s.run()
    s.assert_ok()
    assert not [m for m in s.messages() if not m.is_response and m.method == "REGISTER"]


def test_relayed_message_and_uas_message(tmp_path, kam):
    bob = Sipp(tmp_path, "register_wait.xml", kam.port, rows=[row("bob")], ooc="uas_message.xml", duration_ms=3000)
    bob.start()
    import time
    time.sleep(1.0)
    a = Sipp(tmp_path, "bench_message.xml", kam.port, rows=[row("alice", "bob", body="hello bob")])
    register_from_port(kam.port, "alice", USERS["alice"], a.port)
    a.run()
    a.assert_ok()
    bob.wait()
    bob.assert_ok()
    lines = [l for l in bob.logs() if l.startswith("MESSAGE|")]
    assert lines and lines[0].endswith("|hello bob") and "sip:alice@localhost" in lines[0], bob.describe()


def test_retransmit(tmp_path, kam):
    s = sipp(tmp_path, "retransmit.xml", kam, rows=[row("alice", "lobby")])
    register_from_port(kam.port, "alice", USERS["alice"], s.port)
    s.run()
    s.assert_ok()
    sent = [m for m in s.messages() if m.direction == "sent"]
    # 3 copies (sipp may add one more: it re-sends its last request when an answer repeats)
    assert len(sent) >= 3 and len({m.header("via") for m in sent}) == 1, s.describe()


def test_bench_scenarios_short(tmp_path):
    users = dict(USERS, **{f"u{i:04d}": f"pw-u{i:04d}" for i in range(50)})
    k = Kamailio(tmp_path / "k", users).start()
    try:
        reg = Sipp(tmp_path, "bench_register.xml", k.port, calls=200, timeout_s=60,
                   rows=[(u, users[u], "localhost", "", 3600, None) for u in users if u.startswith("u")],
                   extra=["-r", "100", "-l", "50"])
        reg.run()
        reg.assert_ok()
        bob = Sipp(tmp_path, "uas_message.xml", k.port, calls=200, timeout_s=60)
        register_from_port(k.port, "bob", "bob-pw", bob.port)
        bob.start().wait_listening()
        a = Sipp(tmp_path, "bench_message.xml", k.port, calls=200, timeout_s=60, rows=[row("alice", "bob")],
                 extra=["-r", "100", "-l", "50"])
        register_from_port(k.port, "alice", "alice-pw", a.port)
        a.run()
        a.assert_ok()
        bob.wait()
        bob.assert_ok()
    finally:
        k.stop()


@pytest.mark.skipif(os.environ.get("SIP_NO_BARESIP") == "1", reason="SIP_NO_BARESIP=1")
def test_baresip_registers_and_messages(tmp_path, kam):
    b = Baresip(tmp_path, "alice", USERS["alice"], kam.port, contacts=["bob"]).start()
    try:
        b.wait_for(lambda: [r for r in b.responses("REGISTER") if r.status == 200], "REGISTER 200")
        bob = Sipp(tmp_path, "uas_message.xml", kam.port)
        register_from_port(kam.port, "bob", USERS["bob"], bob.port)
        bob.start().wait_listening()
        r = b.command("message", "hello from baresip")
        assert r.get("ok"), r
        bob.wait()
        bob.assert_ok()
        assert any(l.endswith("|hello from baresip") for l in bob.logs()), bob.describe()
        # and bob -> alice (baresip answers 200)
        with SIPClient(kam.port, user="bob", password=USERS["bob"]) as c:
            assert c.register(60).status == 200
            assert c.message("sip:alice@localhost", "hi baresip").status == 200
        got = b.wait_for(lambda: b.received("MESSAGE"), "the MESSAGE")
        assert got[0].text == "hi baresip"
    finally:
        b.stop()

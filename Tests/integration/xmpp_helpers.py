"""Helpers for the XMPP tests (protocols/xmpp.md): a blocking wrapper around slixmpp and a raw
socket client for the malformed-input tests.

    c = XMPPClient(server, "alice")            # STARTTLS (certificate not verified) + SCRAM
    c.connect()                                -> waits for session_start; AssertionError otherwise
    r = c.join_muc("lobby", "alice", maxstanzas=20)
                                               -> JoinResult(occupants, self_presence, history, subject)
    c.send_groupchat("lobby", "hi")            -> the stanza id (also the origin-id)
    c.send_chat("bob@localhost", "psst")
    m = c.expect_message(lambda s: s.body == "x", "x")
                                               -> the first matching received stanza; the
                                                  others stay in the backlog, in order
    c.disco_items("conference.localhost")      -> [(jid, name, node)]
    c.ping()                                   -> the iq result
    c.disconnect()

slixmpp is asyncio-based: every XMPPClient runs its own event loop in its own daemon thread
and the blocking methods hand work to that loop and wait with a timeout, so a test can fail but
never hang. Every stanza received is recorded (as an ElementTree copy) by an incoming filter;
`c.dump()` returns the raw bytes both ways for bug reports.

`RawXMPP` is a plain (optionally TLS-upgraded) socket: send bytes, read what the server answers,
read until the stream is closed.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import re
import socket
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable

from swb import READ_TIMEOUT, USERS, send_while_reading

import slixmpp  # noqa: E402

NS = {
    "c": "jabber:client",
    "stream": "http://etherx.jabber.org/streams",
    "streams": "urn:ietf:params:xml:ns:xmpp-streams",
    "stanzas": "urn:ietf:params:xml:ns:xmpp-stanzas",
    "sasl": "urn:ietf:params:xml:ns:xmpp-sasl",
    "tls": "urn:ietf:params:xml:ns:xmpp-tls",
    "muc": "http://jabber.org/protocol/muc",
    "muc_user": "http://jabber.org/protocol/muc#user",
    "disco_items": "http://jabber.org/protocol/disco#items",
    "disco_info": "http://jabber.org/protocol/disco#info",
    "delay": "urn:xmpp:delay",
    "sid": "urn:xmpp:sid:0",
    "ping": "urn:xmpp:ping",
    "chatstates": "http://jabber.org/protocol/chatstates",
}

# Quiet: slixmpp logs every failed connection attempt at ERROR/WARNING.
logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ns(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def bare(jid: str | None) -> str:
    return (jid or "").split("/", 1)[0]


def resource(jid: str | None) -> str | None:
    j = jid or ""
    return j.split("/", 1)[1] if "/" in j else None


# --------------------------------------------------------------------------------------------
# Received stanzas


@dataclass
class Stanza:
    """One stanza received by a client (an ElementTree copy, so it is safe across threads)."""

    el: ET.Element
    xml: str
    t: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return _local(self.el.tag)

    @property
    def type(self) -> str | None:
        return self.el.get("type")

    @property
    def frm(self) -> str:
        return self.el.get("from") or ""

    @property
    def to(self) -> str:
        return self.el.get("to") or ""

    @property
    def id(self) -> str | None:
        return self.el.get("id")

    def _text(self, local: str) -> str | None:
        for child in self.el:
            if _local(child.tag) == local and _ns(child.tag) in ("jabber:client", ""):
                return child.text or ""
        return None

    @property
    def body(self) -> str | None:
        return self._text("body")

    @property
    def subject(self) -> str | None:
        return self._text("subject")

    def find(self, path: str) -> ET.Element | None:
        return self.el.find(path, NS)

    def findall(self, path: str) -> list[ET.Element]:
        return self.el.findall(path, NS)

    @property
    def statuses(self) -> set[int]:
        """MUC status codes (<x xmlns=muc#user><status code=.../>)."""
        return {int(s.get("code")) for s in self.findall("muc_user:x/muc_user:status") if (s.get("code") or "").isdigit()}

    @property
    def muc_item(self) -> ET.Element | None:
        return self.find("muc_user:x/muc_user:item")

    @property
    def error_condition(self) -> str | None:
        """The defined condition of <error> (e.g. 'conflict'), or None."""
        err = self.find("c:error")
        if err is None:
            return None
        for child in err:
            if _ns(child.tag) == NS["stanzas"] and _local(child.tag) != "text":
                return _local(child.tag)
        return "?"

    @property
    def delay(self) -> str | None:
        d = self.find("delay:delay")
        return None if d is None else d.get("stamp")

    def stanza_ids(self) -> list[tuple[str | None, str | None]]:
        return [(e.get("by"), e.get("id")) for e in self.findall("sid:stanza-id")]

    def origin_id(self) -> str | None:
        e = self.find("sid:origin-id")
        return None if e is None else e.get("id")

    def __repr__(self) -> str:
        return self.xml if len(self.xml) < 1500 else self.xml[:1500] + "..."


@dataclass
class JoinResult:
    occupants: list[Stanza]          # presences from the room before the self-presence
    self_presence: Stanza | None     # None when the join failed
    history: list[Stanza]            # groupchat messages with <delay> before the subject
    subject: Stanza | None
    error: Stanza | None             # the error presence, when the join failed
    all: list[Stanza]                # everything from the room, in order

    def occupant_nicks(self) -> list[str]:
        return [resource(p.frm) for p in self.occupants if p.type != "unavailable"]


class LoginFailed(AssertionError):
    pass


# --------------------------------------------------------------------------------------------
# The slixmpp wrapper


class _Client(slixmpp.ClientXMPP):
    """ClientXMPP that records the raw bytes it exchanges."""

    def __init__(self, *a, raw_log: list, **kw):
        super().__init__(*a, **kw)
        self._raw_log = raw_log

    def data_received(self, data: bytes) -> None:  # noqa: D401
        self._raw_log.append(("<<", bytes(data)))
        super().data_received(data)

    def send_raw(self, data) -> None:
        self._raw_log.append((">>", data.encode("utf-8") if isinstance(data, str) else bytes(data)))
        super().send_raw(data)


class XMPPClient:
    """A slixmpp client on its own event loop thread, with blocking, time-limited methods."""

    _counter = 0

    def __init__(self, server, user: str, password: str | None = None, *, resource: str | None = None,
                 host: str = "127.0.0.1", port: int | None = None, domain: str | None = None,
                 starttls: bool = True, unencrypted_plain: bool = False, unencrypted_scram: bool = False,
                 mech: str | None = None, cafile: str | None = None, timeout: float = READ_TIMEOUT,
                 name: str | None = None):
        XMPPClient._counter += 1
        self.name = name or f"xmpp-{user}-{XMPPClient._counter}"
        self.user = user
        self.domain = domain or getattr(server, "domain", "localhost")
        self.muc = f"conference.{self.domain}"
        self.host = host
        self.port = port if port is not None else server.xmpp_port
        self.timeout = timeout
        jid = f"{user}@{self.domain}" + (f"/{resource}" if resource else "")
        self.password = password if password is not None else USERS.get(user, "")

        self.raw_log: list[tuple[str, bytes]] = []
        self.backlog: list[Stanza] = []     # received, not yet consumed by a wait
        self.received: list[Stanza] = []    # every stanza received
        self.events: list[tuple[str, object]] = []
        self.cond = threading.Condition()
        self.sasl_failures: list[str] = []
        self.stream_errors: list[str] = []

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, name=self.name, daemon=True)
        self.thread.start()

        async def make():
            c = _Client(jid, self.password, raw_log=self.raw_log)
            c.enable_direct_tls = False
            c.enable_starttls = starttls
            c.enable_plaintext = True
            ctx = ssl.create_default_context()
            if cafile:
                ctx.load_verify_locations(cafile=cafile)
                ctx.check_hostname = True
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            c.ssl_context = ctx
            mechs = c.plugin["feature_mechanisms"]
            mechs.unencrypted_plain = unencrypted_plain
            mechs.unencrypted_scram = unencrypted_scram
            if mech:
                mechs.use_mech = mech
            c.add_filter("in", self._record)
            for ev in ("session_start", "failed_auth", "failed_all_auth", "no_auth", "auth_success",
                       "disconnected", "connection_failed", "tls_success", "ssl_invalid_chain",
                       "session_bind", "killed"):
                c.add_event_handler(ev, self._event_recorder(ev))
            c.add_event_handler("stream_error", self._on_stream_error)
            return c

        self.client: slixmpp.ClientXMPP = self._run(make())
        self.jid: str | None = None
        self.connected = False

    # loop plumbing ---------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _run(self, coro, timeout: float | None = None):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout=self.timeout if timeout is None else timeout)
        except TimeoutError:
            fut.cancel()
            raise AssertionError(f"{self.name}: operation timed out; {self._describe()}") from None

    def _call(self, fn, *args, timeout: float | None = None):
        async def wrapper():
            return fn(*args)
        return self._run(wrapper(), timeout)

    # recording -------------------------------------------------------------------------------

    def _record(self, stanza):
        try:
            el = copy.deepcopy(stanza.xml)
            rec = Stanza(el, ET.tostring(el, encoding="unicode"))
            with self.cond:
                self.received.append(rec)
                if rec.name in ("message", "presence", "iq"):
                    self.backlog.append(rec)
                if rec.name == "failure" and _ns(rec.el.tag) == NS["sasl"]:
                    cond = [_local(ch.tag) for ch in rec.el if _local(ch.tag) != "text"]
                    self.sasl_failures.append(cond[0] if cond else "?")
                self.cond.notify_all()
        except Exception:  # noqa: BLE001 - never break the client's stream
            pass
        return stanza

    def _event_recorder(self, name: str):
        def handler(data=None):
            with self.cond:
                self.events.append((name, data))
                self.cond.notify_all()
        return handler

    def _on_stream_error(self, err) -> None:
        try:
            cond = err["condition"]
        except Exception:  # noqa: BLE001
            cond = "?"
        with self.cond:
            self.stream_errors.append(cond)
            self.events.append(("stream_error", cond))
            self.cond.notify_all()

    def has_event(self, name: str) -> bool:
        with self.cond:
            return any(n == name for n, _ in self.events)

    def wait_event(self, names: tuple[str, ...] | str, timeout: float | None = None) -> str | None:
        """Waits until one of the events happened; returns its name or None at the timeout."""
        if isinstance(names, str):
            names = (names,)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self.cond:
            while True:
                for n, _ in self.events:
                    if n in names:
                        return n
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def dump(self, limit: int = 6000) -> str:
        """The raw conversation (>> sent, << received) for failure messages and bug reports."""
        out = []
        for d, data in list(self.raw_log):
            out.append(f"{d} {data.decode('utf-8', 'replace')}")
        text = "\n".join(out)
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def _describe(self) -> str:
        with self.cond:
            recent = [s.xml[:400] for s in self.received[-10:]]
            events = [n for n, _ in self.events][-10:]
        return f"{self.name}: events={events} last stanzas={recent}"

    # connecting ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts connecting without waiting."""
        self._call(self.client.connect, self.host, self.port)

    def connect(self, timeout: float | None = None) -> "XMPPClient":
        """Connects and logs in; returns once the session started (bound resource)."""
        outcome = self.try_connect(timeout)
        if outcome != "session_start":
            raise LoginFailed(f"{self.name}: login did not succeed ({outcome}); sasl failures="
                              f"{self.sasl_failures} stream errors={self.stream_errors}\n{self.dump()}")
        return self

    login = connect

    def try_connect(self, timeout: float | None = None) -> str:
        """Connects; returns the first of session_start, failed_auth, failed_all_auth,
        no_auth, stream_error, disconnected, connection_failed, or 'timeout'."""
        self.start()
        got = self.wait_event(("session_start", "failed_auth", "failed_all_auth", "no_auth", "stream_error",
                               "disconnected", "connection_failed"),
                              timeout=max(10.0, self.timeout) if timeout is None else timeout)
        if got == "session_start":
            self.connected = True
            self.jid = str(self.client.boundjid)
        return got or "timeout"

    def tls_active(self) -> bool:
        transport = self.client.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def peer_cert_sha256(self) -> str | None:
        """SHA-256 fingerprint (AA:BB:...) of the server's certificate, when TLS is on."""
        transport = self.client.transport
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        if obj is None:
            return None
        der = obj.getpeercert(True)
        return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())

    def mechanism(self) -> str | None:
        mech = self.client.plugin["feature_mechanisms"].mech
        return None if mech is None else mech.name

    def disconnect(self, timeout: float = 5.0) -> None:
        """Closes the stream (</stream:stream>) and stops the loop thread."""
        try:
            if self.client.transport is not None:
                async def close():
                    fut = self.client.disconnect(wait=1.0)
                    try:
                        await asyncio.wait_for(asyncio.shield(fut), timeout)
                    except Exception:  # noqa: BLE001
                        self.client.abort()
                self._run(close(), timeout + 2)
        except Exception:  # noqa: BLE001
            pass
        self.stop_loop()

    close = disconnect

    def stop_loop(self) -> None:
        """Cancels every task of the loop, stops and closes it.

        Nothing may be left for slixmpp's XMLStream.__del__ to cancel on a closed loop: that
        raises inside a garbage collection, and the traceback formatting of the "exception
        ignored" report (ast.parse, in Python 3.11) can run in the middle of another ast.parse
        (pytest's failure report) and corrupt its recursion counter ("AST constructor
        recursion depth mismatch")."""
        if self.loop.is_closed():
            return
        if self.loop.is_running():
            async def cancel_all():
                me = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not me]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            try:
                self._run(cancel_all(), 5)
            except Exception:  # noqa: BLE001
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.client._run_out_filters = None
        if not self.thread.is_alive():
            self.loop.close()

    def wait_disconnected(self, timeout: float | None = None) -> bool:
        return self.wait_event("disconnected", timeout) is not None

    # sending ---------------------------------------------------------------------------------

    def send_raw(self, xml: str) -> None:
        self._call(self.client.send_raw, xml)

    def send_xml(self, el: ET.Element) -> None:
        self.send_raw(ET.tostring(el, encoding="unicode"))

    def _element(self, name: str, **attrs) -> ET.Element:
        el = ET.Element(f"{{jabber:client}}{name}")
        for k, v in attrs.items():
            if v is not None:
                el.set(k.rstrip("_"), str(v))
        return el

    def room_jid(self, room: str) -> str:
        return room if "@" in room else f"{room}@{self.muc}"

    def send_groupchat(self, room: str, body: str, id: str | None = None, origin_id: str | bool = True) -> str:
        """Sends a groupchat message; returns its id (also used as XEP-0359 origin-id unless
        origin_id is False or another string)."""
        sid = id or f"{self.name}-{uuid.uuid4().hex[:12]}"
        el = self._element("message", to=self.room_jid(room), type="groupchat", id=sid)
        ET.SubElement(el, "{jabber:client}body").text = body
        if origin_id:
            ET.SubElement(el, f"{{{NS['sid']}}}origin-id", id=sid if origin_id is True else origin_id)
        self.send_xml(el)
        return sid

    def send_chat(self, to: str, body: str, id: str | None = None) -> str:
        sid = id or f"{self.name}-{uuid.uuid4().hex[:12]}"
        el = self._element("message", to=to, type="chat", id=sid)
        ET.SubElement(el, "{jabber:client}body").text = body
        self.send_xml(el)
        return sid

    def send_presence(self, to: str | None = None, type: str | None = None, children: list[ET.Element] = ()) -> None:
        el = self._element("presence", to=to, type=type)
        for ch in children:
            el.append(ch)
        self.send_xml(el)

    # receiving -------------------------------------------------------------------------------

    def first(self, wanted: Callable[[Stanza], bool], what: str, timeout: float | None = None) -> Stanza:
        """The first received stanza (backlog first) for which `wanted` holds; the others stay."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self.cond:
            while True:
                for i, s in enumerate(self.backlog):
                    if wanted(s):
                        del self.backlog[i]
                        return s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: timed out waiting for {what}; {self._describe()}")
                self.cond.wait(remaining)

    def expect_message(self, wanted: Callable[[Stanza], bool] | None = None, what: str = "a message",
                       timeout: float | None = None, **fields) -> Stanza:
        """The first <message> matching `wanted` and fields (type=, frm=, body=)."""
        return self.first(lambda s: s.name == "message" and _fields_match(s, fields) and (wanted is None or wanted(s)),
                          f"{what} {fields}", timeout)

    def expect_presence(self, wanted: Callable[[Stanza], bool] | None = None, what: str = "a presence",
                        timeout: float | None = None, **fields) -> Stanza:
        return self.first(lambda s: s.name == "presence" and _fields_match(s, fields) and (wanted is None or wanted(s)),
                          f"{what} {fields}", timeout)

    def take_all(self, wanted: Callable[[Stanza], bool] = lambda s: True) -> list[Stanza]:
        """Removes and returns every backlog stanza matching `wanted` (no waiting)."""
        with self.cond:
            out = [s for s in self.backlog if wanted(s)]
            self.backlog = [s for s in self.backlog if not wanted(s)]
            return out

    def collect(self, wanted: Callable[[Stanza], bool], until: Callable[[Stanza], bool], what: str,
                timeout: float | None = None) -> list[Stanza]:
        """Every backlog stanza matching `wanted` up to and including the first matching `until`
        (in arrival order); the ones not matching `wanted` stay in the backlog."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out: list[Stanza] = []
        with self.cond:
            while True:
                i = 0
                while i < len(self.backlog):
                    s = self.backlog[i]
                    if wanted(s):
                        del self.backlog[i]
                        out.append(s)
                        if until(s):
                            return out
                    else:
                        i += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: timed out waiting for {what}; got "
                                         f"{[x.xml[:300] for x in out]}; {self._describe()}")
                self.cond.wait(remaining)

    # iq --------------------------------------------------------------------------------------

    def iq(self, type: str, to: str | None, child: ET.Element, timeout: float | None = None) -> Stanza:
        """Sends an iq and returns the answer (result or error) with the same id."""
        iid = f"iq-{uuid.uuid4().hex[:12]}"
        el = self._element("iq", type=type, to=to, id=iid)
        el.append(child)
        self.send_xml(el)
        return self.first(lambda s: s.name == "iq" and s.id == iid and s.type in ("result", "error"),
                          f"iq answer {iid}", timeout)

    def disco_items(self, jid: str, node: str | None = None, timeout: float | None = None) -> list[tuple[str, str | None, str | None]]:
        q = ET.Element(f"{{{NS['disco_items']}}}query")
        if node:
            q.set("node", node)
        r = self.iq("get", jid, q, timeout)
        assert r.type == "result", f"{self.name}: disco#items {jid}: {r.xml}"
        return [(i.get("jid"), i.get("name"), i.get("node")) for i in r.findall("disco_items:query/disco_items:item")]

    def disco_info(self, jid: str, timeout: float | None = None) -> tuple[list[dict], set[str]]:
        r = self.iq("get", jid, ET.Element(f"{{{NS['disco_info']}}}query"), timeout)
        assert r.type == "result", f"{self.name}: disco#info {jid}: {r.xml}"
        idents = [dict(i.attrib) for i in r.findall("disco_info:query/disco_info:identity")]
        feats = {f.get("var") for f in r.findall("disco_info:query/disco_info:feature")}
        return idents, feats

    def ping(self, jid: str | None = None, timeout: float | None = None) -> Stanza:
        r = self.iq("get", jid if jid is not None else self.domain, ET.Element(f"{{{NS['ping']}}}ping"), timeout)
        return r

    # MUC -------------------------------------------------------------------------------------

    def join_muc(self, room: str, nick: str, maxstanzas: int | None = None, seconds: int | None = None,
                 since: str | None = None, maxchars: int | None = None, timeout: float | None = None,
                 expect_error: bool = False) -> JoinResult:
        """Sends the join presence and waits for the self-presence (status 110) and the subject
        (or an error presence). Returns what the room sent, in order."""
        rj = self.room_jid(room)
        x = ET.Element(f"{{{NS['muc']}}}x")
        hist = {k: v for k, v in (("maxstanzas", maxstanzas), ("seconds", seconds), ("since", since),
                                  ("maxchars", maxchars)) if v is not None}
        if hist:
            ET.SubElement(x, f"{{{NS['muc']}}}history", {k: str(v) for k, v in hist.items()})
        self.send_presence(to=f"{rj}/{nick}", children=[x])

        def from_room(s: Stanza) -> bool:
            return bare(s.frm) == rj and s.name in ("presence", "message")

        def is_self_or_error(s: Stanza) -> bool:
            return s.name == "presence" and (110 in s.statuses or s.type == "error")

        first_part = self.collect(from_room, is_self_or_error, f"self-presence of {rj}/{nick}", timeout)
        last = first_part[-1]
        if last.type == "error":
            return JoinResult([p for p in first_part[:-1] if p.name == "presence"], None, [], None, last, first_part)
        assert not expect_error, f"{self.name}: expected the join to fail, got {last.xml}"
        occupants = [p for p in first_part[:-1] if p.name == "presence"]
        early_msgs = [m for m in first_part[:-1] if m.name == "message"]

        def is_subject(s: Stanza) -> bool:
            return s.name == "message" and s.subject is not None and s.body is None

        rest = self.collect(lambda s: from_room(s) and (s.name == "message" and (s.delay is not None or is_subject(s))),
                            is_subject, f"subject of {rj}", timeout)
        history = early_msgs + [m for m in rest if not is_subject(m)]
        return JoinResult(occupants, last, history, rest[-1], None, first_part + rest)

    def leave_muc(self, room: str, nick: str, timeout: float | None = None) -> Stanza:
        rj = self.room_jid(room)
        self.send_presence(to=f"{rj}/{nick}", type="unavailable")
        return self.expect_presence(lambda s: bare(s.frm) == rj and s.type == "unavailable" and 110 in s.statuses,
                                    f"unavailable self-presence from {rj}", timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()


def _fields_match(s: Stanza, fields: dict) -> bool:
    for k, v in fields.items():
        got = {"frm": s.frm, "type": s.type, "body": s.body, "to": s.to, "id": s.id}[k] if k in \
            ("frm", "type", "body", "to", "id") else s.el.get(k)
        if got != v:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Raw socket


STREAM_HEADER = ("<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' "
                 "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


class RawXMPP:
    """A bare TCP connection to the XMPP port: send bytes, read what comes back."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = READ_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = bytearray()     # everything received so far
        self.eof = False
        self.reset = False

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode("utf-8") if isinstance(data, str) else data)

    def send_while_reading(self, data: bytes, timeout: float) -> tuple[bytes, bool]:
        """Sends `data` while reading the answer (swb.send_while_reading) until the server
        closes; returns (everything received, closed)."""
        x = send_while_reading(self.sock, data, timeout)
        self.buf.extend(x.received)
        self.eof, self.reset = x.eof, x.reset
        return bytes(self.buf), x.eof

    def _recv_some(self, deadline: float) -> bool:
        """One recv into buf; False at EOF/reset, raises TimeoutError at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError from None
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf.extend(chunk)
        return True

    def read_until(self, pattern: bytes | re.Pattern, timeout: float | None = None) -> bytes:
        """Reads until `pattern` (bytes or compiled bytes regex) appears in everything received;
        returns everything received. AssertionError at the timeout or EOF without it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)

        def found():
            return (pattern.search(self.buf) is not None) if isinstance(pattern, re.Pattern) else pattern in self.buf
        while not found():
            if self.eof:
                raise AssertionError(f"stream closed before {pattern!r}; received {bytes(self.buf)[-2000:]!r}")
            try:
                self._recv_some(deadline)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {pattern!r}; received {bytes(self.buf)[-2000:]!r}") from None
        return bytes(self.buf)

    def read_until_closed(self, timeout: float | None = None) -> tuple[bytes, bool]:
        """Reads until the server closes the connection; returns (everything received, closed)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            try:
                self._recv_some(deadline)
            except TimeoutError:
                return bytes(self.buf), False
        return bytes(self.buf), True

    def open_stream(self, domain: str = "localhost", timeout: float | None = None) -> bytes:
        """Sends the stream header and reads up to the end of <stream:features>."""
        self.send(STREAM_HEADER.format(domain=domain))
        return self.read_until(b"</stream:features>", timeout)

    def starttls(self, domain: str = "localhost", timeout: float | None = None) -> None:
        """STARTTLS (certificate not verified) and the stream restart; buf is reset."""
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(b"<proceed", timeout)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=domain)
        self.buf = bytearray()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stream_error_condition(data: bytes) -> str | None:
    """The defined condition inside the first <stream:error> of `data`, or None."""
    m = re.search(rb"<stream:error>(.*?)</stream:error>", data, re.S)
    if not m:
        m = re.search(rb"<(?:\w+:)?error[^>]*xmlns=['\"]http://etherx.jabber.org/streams['\"][^>]*>(.*?)</", data, re.S)
        if not m:
            return None
    for cm in re.finditer(rb"<([a-z-]+)[^>]*xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]", m.group(1)):
        if cm.group(1) != b"text":
            return cm.group(1).decode()
    return None


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")

"""SIP helpers for the integration tests (test_sip.py) and for Tests/sip: real UAs and a raw client.

    Sipp(workdir, "uac_call.xml", server_port, port=..., rows=[...], transport="udp", ...)
        one sipp process on a scenario of Tests/sip/scenarios; .run() -> exit code (0 = every
        call passed); .messages() parses its -trace_msg log into SipMsg; .describe() for failures.
    SIPClient(server_port, transport="udp", port=0)
        a small SIP UA over a UDP socket or a TCP connection: builds requests (Via/branch, tags,
        CSeq), answers digest challenges (MD5, SHA-256; qop=auth), reads responses/requests with
        timeouts. For what sipp cannot express: SHA-256, stale nonces, exact retransmissions,
        malformed requests, a UA that must not miss a request between REGISTER and listening.
    register_from_port(server_port, user, password, port)
        REGISTER from the very socket address a sipp UA will use next (then closes it), so that
        the binding is that address whichever way the server reads it (Contact or source).
    Kamailio(tmp, users)
        a private Kamailio (Tests/bench/peers/kamailio.cfg) on a free loopback port.
    Baresip(tmp, user, password, server_port)
        Debian's baresip 1.0 headless: generated config/accounts/contacts, commands over ctrl_tcp
        (netstring JSON), SIP trace (-s) on stdout to read what it received.

Standard library only. Every wait has a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Tests" / "sip"))
from make_kamailio_db import write_db  # noqa: E402  (Tests/sip: the scenarios' own tools)
from make_users_csv import csv_line, write_csv  # noqa: E402
from swb import free_port  # noqa: E402

SCENARIOS = REPO / "Tests" / "sip" / "scenarios"
KAMAILIO_CFG = REPO / "Tests" / "bench" / "peers" / "kamailio.cfg"

T = float(os.environ.get("SWB_TEST_READ_TIMEOUT", "5")) * 2  # per SIP step, generous


# --------------------------------------------------------------------------------------------
# ports


def free_port_pair() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP (SIP uses the same number for both)."""
    return free_port(udp=True)


def tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_udp_port() -> int:
    """A UDP port for a peer's media socket, picked like every other port (swb.free_port)."""
    return free_port(udp=True)


# --------------------------------------------------------------------------------------------
# SIP messages


COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}


@dataclass
class SipMsg:
    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    raw: bytes = b""
    direction: str = ""          # sipp logs: "sent" / "received"

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        assert self.is_response, self.start
        return int(self.start.split(" ", 2)[1])

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if not self.is_response else self.cseq[1]

    @property
    def uri(self) -> str:
        assert not self.is_response
        return self.start.split(" ")[1]

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if COMPACT.get(n.lower(), n.lower()) == name]

    def header(self, name: str) -> str | None:
        vals = self.all(name)
        return vals[0] if vals else None

    @property
    def cseq(self) -> tuple[int, str]:
        n, m = (self.header("cseq") or "0 ?").split()
        return int(n), m

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    def tag(self, which: str = "to") -> str | None:
        v = self.header(which) or ""
        m = re.search(r";\s*tag=([^;,\s]+)", v)
        return m.group(1) if m else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __str__(self) -> str:
        return self.raw.decode("utf-8", "replace") if self.raw else self.start


def parse_headers_block(block: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in block.split("\r\n") if "\r\n" in block else block.split("\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:              # folded line
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
            continue
        if ":" not in line:
            continue
        n, v = line.split(":", 1)
        headers.append((n.strip(), v.strip()))
    return headers


def parse_message(data: bytes) -> SipMsg:
    sep = data.find(b"\r\n\r\n")
    if sep < 0:
        sep2 = data.find(b"\n\n")
        head, body = (data, b"") if sep2 < 0 else (data[:sep2], data[sep2 + 2:])
    else:
        head, body = data[:sep], data[sep + 4:]
    text = head.decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    headers = parse_headers_block("\n".join(lines[1:]))
    return SipMsg(start, headers, body, data)


def split_stream(buf: bytearray) -> SipMsg | None:
    """One whole message off the front of a TCP stream buffer (framed by Content-Length)."""
    while buf.startswith(b"\r\n"):       # keepalive CRLFs
        del buf[:2]
    sep = buf.find(b"\r\n\r\n")
    if sep < 0:
        return None
    head = bytes(buf[:sep]).decode("utf-8", "replace")
    m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)\s*$", head)
    n = int(m.group(1)) if m else 0
    if len(buf) < sep + 4 + n:
        return None
    data = bytes(buf[:sep + 4 + n])
    del buf[:sep + 4 + n]
    return parse_message(data)


# --------------------------------------------------------------------------------------------
# digest (RFC 2617 / RFC 8760)


HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth", algorithm=SHA-256` -> {"realm": "x", ...}."""
    scheme, _, rest = value.strip().partition(" ")
    assert scheme.lower() == "digest", f"not a Digest challenge: {value!r}"
    params: dict[str, str] = {}
    for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]+)', rest):
        params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return params


def digest_response(ch: dict[str, str], method: str, uri: str, user: str, password: str,
                    nc: int = 1, cnonce: str | None = None, algorithm: str | None = None,
                    body: bytes = b"") -> str:
    """The Authorization/Proxy-Authorization value answering challenge `ch`."""
    algorithm = algorithm or ch.get("algorithm", "MD5")
    h = lambda s: HASHES[algorithm](s.encode()).hexdigest()  # noqa: E731
    ha1 = h(f"{user}:{ch['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    cnonce = cnonce or secrets.token_hex(8)
    ncs = f"{nc:08x}"
    qop = None
    if "qop" in ch:
        qops = [q.strip() for q in ch["qop"].split(",")]
        assert "auth" in qops, f"server offers no qop=auth: {ch}"
        qop = "auth"
    if qop:
        resp = h(f"{ha1}:{ch['nonce']}:{ncs}:{cnonce}:{qop}:{ha2}")
    else:
        resp = h(f"{ha1}:{ch['nonce']}:{ha2}")
    parts = [f'username="{user}"', f'realm="{ch["realm"]}"', f'nonce="{ch["nonce"]}"', f'uri="{uri}"',
             f'response="{resp}"', f"algorithm={algorithm}"]
    if qop:
        parts += [f"qop={qop}", f"nc={ncs}", f'cnonce="{cnonce}"']
    if "opaque" in ch:
        parts.append(f'opaque="{ch["opaque"]}"')
    return "Digest " + ", ".join(parts)


def challenges(resp: SipMsg) -> list[dict[str, str]]:
    name = "proxy-authenticate" if resp.status == 407 else "www-authenticate"
    return [parse_challenge(v) for v in resp.all(name)]


# --------------------------------------------------------------------------------------------
# a small SIP UA


class SIPClient:
    """A UA on one UDP socket (bound to 127.0.0.1:`port`, 0 = any) or one TCP connection.

    Requests and responses it receives are kept in order in `self.inbox` until taken by
    `expect_response` / `expect_request` (which leave other messages for later)."""

    _n = 0

    def __init__(self, server_port: int, transport: str = "udp", port: int = 0, host: str = "127.0.0.1",
                 user: str | None = None, password: str | None = None, domain: str = "localhost",
                 timeout: float = T):
        SIPClient._n += 1
        self.name = f"sip{SIPClient._n}" + (f"-{user}" if user else "")
        self.server = (host, server_port)
        self.transport = transport.lower()
        self.user, self.password, self.domain = user, password, domain
        self.timeout = timeout
        if self.transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", port))
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if port:
                self.sock.bind(("127.0.0.1", port))
            self.sock.settimeout(timeout)
            self.sock.connect(self.server)
        self.local = self.sock.getsockname()
        self.buf = bytearray()
        self.inbox: list[SipMsg] = []
        self.history: list[tuple[str, str]] = []      # ("sent"/"recv", first line) for failures
        self.call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        self.from_tag = secrets.token_hex(5)
        self.cseq = 0
        self.nc = 0
        self.closed = False

    # wire ------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.local[1]

    @property
    def contact_uri(self) -> str:
        u = f"{self.user}@" if self.user else ""
        return f"sip:{u}127.0.0.1:{self.port};transport={self.transport}"

    def send_raw(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        self.history.append(("sent", data.split(b"\r\n", 1)[0].decode("utf-8", "replace")))
        if self.transport == "udp":
            self.sock.sendto(data, addr or self.server)
        else:
            self.sock.sendall(data)

    def _recv_one(self, deadline: float) -> SipMsg | None:
        """The next message from the wire, or None at the deadline."""
        while True:
            if self.transport != "udp":
                m = split_stream(self.buf)
                if m is not None:
                    self.history.append(("recv", m.start))
                    return m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                if self.transport == "udp":
                    data, _ = self.sock.recvfrom(1 << 17)
                    if not data.strip():
                        continue           # keepalive
                    m = parse_message(data)
                    self.history.append(("recv", m.start))
                    return m
                chunk = self.sock.recv(1 << 17)
            except socket.timeout:
                return None
            except (ConnectionResetError, ConnectionRefusedError):
                if self.transport == "udp":
                    continue               # ICMP port unreachable from an earlier send
                self.closed = True
                return None
            if not chunk:
                self.closed = True
                return None
            self.buf.extend(chunk)

    def _describe(self) -> str:
        return f"{self.name} ({self.transport} :{self.port}): inbox={[m.start for m in self.inbox]} " \
               f"history={self.history[-20:]}"

    def first(self, wanted, what: str, timeout: float | None = None) -> SipMsg:
        for i, m in enumerate(self.inbox):
            if wanted(m):
                return self.inbox.pop(i)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            m = self._recv_one(deadline)
            if m is None:
                raise AssertionError(f"timed out waiting for {what}; {self._describe()}")
            if wanted(m):
                return m
            self.inbox.append(m)

    def expect_response(self, call_id: str | None = None, cseq: int | None = None, final: bool = True,
                        timeout: float | None = None) -> SipMsg:
        """The next (final, by default) response of this call/CSeq; 1xx are skipped when final."""
        call_id = call_id or self.call_id

        def wanted(m: SipMsg) -> bool:
            return (m.is_response and m.call_id == call_id and (cseq is None or m.cseq[0] == cseq)
                    and (not final or m.status >= 200))
        return self.first(wanted, f"a response to {call_id} CSeq {cseq}", timeout)

    def expect_request(self, method: str = "MESSAGE", timeout: float | None = None, answer: int | None = 200) -> SipMsg:
        """The next request of this method; answered `answer` (None: not answered)."""
        req = self.first(lambda m: not m.is_response and m.method == method, f"a {method} request", timeout)
        if answer is not None:
            self.reply(req, answer)
        return req

    def drain_requests(self, method: str = "MESSAGE", wait: float = 1.0, answer: int | None = 200) -> list[SipMsg]:
        out = []
        while True:
            try:
                out.append(self.expect_request(method, timeout=wait, answer=answer))
            except AssertionError:
                return out

    def reply(self, req: SipMsg, status: int, reason: str = "", extra: list[str] | None = None) -> bytes:
        reason = reason or {200: "OK", 180: "Ringing", 486: "Busy Here", 487: "Request Terminated"}.get(status, "Answer")
        lines = [f"SIP/2.0 {status} {reason}"]
        for n, v in req.headers:
            ln = COMPACT.get(n.lower(), n.lower())
            if ln in ("via", "from", "call-id", "cseq", "record-route"):
                lines.append(f"{n}: {v}")
            elif ln == "to":
                lines.append(f"{n}: {v}" + ("" if ";tag=" in v.replace(" ", "") else f";tag={self.from_tag}r"))
        lines += extra or []
        lines.append("Content-Length: 0")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.send_raw(data)
        return data

    # requests --------------------------------------------------------------------------------

    def build(self, method: str, uri: str, *, to: str | None = None, frm: str | None = None,
              headers: list[str] | None = None, body: bytes | str = b"", content_type: str | None = None,
              branch: str | None = None, cseq: int | None = None, call_id: str | None = None,
              max_forwards: int | None = 70, contact: bool = True) -> tuple[bytes, str, int]:
        """A request; returns (bytes, branch, cseq)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        aor = f"sip:{self.user}@{self.domain}" if self.user else f"sip:anonymous@{self.domain}"
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/{self.transport.upper()} 127.0.0.1:{self.port};branch={branch};rport"]
        if max_forwards is not None:
            lines.append(f"Max-Forwards: {max_forwards}")
        lines += [f"From: <{frm or aor}>;tag={self.from_tag}",
                  f"To: <{to or aor}>",
                  f"Call-ID: {call_id or self.call_id}",
                  f"CSeq: {cseq} {method}"]
        if contact:
            lines.append(f"Contact: <{self.contact_uri}>")
        lines += headers or []
        if body and content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch, cseq

    def request(self, method: str, uri: str, *, auth: bool = True, algorithm: str | None = None,
                password: str | None = None, timeout: float | None = None, **kw) -> SipMsg:
        """Sends a request and returns its final response; a 401/407 is answered once with
        digest credentials (`algorithm`: the first offered one that we know, unless given)."""
        data, branch, cseq = self.build(method, uri, **kw)
        self.send_raw(data)
        resp = self.expect_response(kw.get("call_id"), cseq, timeout=timeout)
        if resp.status in (401, 407) and auth and self.user:
            headers = list(kw.pop("headers", None) or [])
            headers.append(self.authorization(resp, method, uri, algorithm=algorithm, password=password))
            kw.pop("cseq", None)
            kw.pop("branch", None)
            data, branch, cseq = self.build(method, uri, headers=headers, **kw)
            self.send_raw(data)
            resp = self.expect_response(kw.get("call_id"), cseq, timeout=timeout)
        return resp

    def authorization(self, resp: SipMsg, method: str, uri: str, algorithm: str | None = None,
                      password: str | None = None) -> str:
        chs = challenges(resp)
        assert chs, f"{resp.status} without a challenge: {resp}"
        if algorithm:
            ch = next((c for c in chs if c.get("algorithm", "MD5").upper() == algorithm.upper()), None)
            assert ch is not None, f"no {algorithm} challenge in {resp}"
        else:
            ch = next(c for c in chs if c.get("algorithm", "MD5").upper() in HASHES)
        self.nc += 1
        name = "Proxy-Authorization" if resp.status == 407 else "Authorization"
        return f"{name}: " + digest_response(ch, method, uri, self.user, password or self.password,
                                             nc=self.nc, algorithm=ch.get("algorithm", "MD5").upper())

    def register(self, expires: int | None = 3600, algorithm: str | None = None, password: str | None = None,
                 contact: str | None = None, extra: list[str] | None = None, timeout: float | None = None) -> SipMsg:
        """REGISTER sip:<domain> (same Call-ID each time, as a UA does); returns the final response."""
        headers = list(extra or [])
        if expires is not None:
            headers.append(f"Expires: {expires}")
        if contact is not None:
            headers.append(f"Contact: {contact}")
        return self.request("REGISTER", f"sip:{self.domain}", headers=headers, algorithm=algorithm,
                            password=password, contact=contact is None, timeout=timeout)

    def message(self, to_uri: str, text: str, content_type: str = "text/plain", **kw) -> SipMsg:
        """MESSAGE (new Call-ID each, like a UA's pager mode); returns the final response."""
        return self.request("MESSAGE", to_uri, to=to_uri, body=text, content_type=content_type,
                            call_id=f"{secrets.token_hex(8)}@127.0.0.1", **kw)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def bindings(resp: SipMsg) -> dict[str, int]:
    """The Contact bindings of a REGISTER's 200: {uri: expires}."""
    out = {}
    for v in resp.all("contact"):
        for part in re.findall(r'<[^>]*>[^,]*|[^,]+', v):
            m = re.match(r'\s*<([^>]*)>(.*)', part)
            if not m:
                continue
            e = re.search(r";\s*expires\s*=\s*(\d+)", m.group(2))
            out[m.group(1)] = int(e.group(1)) if e else -1
    return out


def register_from_port(server_port: int, user: str, password: str, port: int, transport: str = "udp",
                       expires: int = 3600, domain: str = "localhost") -> SipMsg:
    """REGISTERs user from 127.0.0.1:`port` (the socket a sipp UA will then use) and closes the
    socket. Returns the 200."""
    with SIPClient(server_port, transport=transport, port=port, user=user, password=password,
                   domain=domain) as c:
        r = c.register(expires)
        assert r.status == 200, f"REGISTER {user} from :{port}: {r}"
        return r


# --------------------------------------------------------------------------------------------
# sipp


class Sipp:
    """One sipp process. Traces go to files in its own folder; `describe()` shows them."""

    _n = 0

    def __init__(self, workdir: Path, scenario: str, server_port: int, *, port: int | None = None,
                 rows: list[tuple] | None = None, transport: str = "udp", calls: int = 1,
                 duration_ms: int | None = None, ooc: str | None = None, sets: dict | None = None,
                 timeout_s: float = 30, extra: list[str] | None = None, auth_uri: str | None = "localhost",
                 server_host: str = "127.0.0.1"):
        Sipp._n += 1
        self.name = f"{Path(scenario).stem}-{Sipp._n}"
        self.dir = Path(workdir) / f"sipp-{self.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port_pair()
        self.scenario = scenario
        self.proc: subprocess.Popen | None = None
        self.rc: int | None = None
        args = ["sipp", "-sf", str(SCENARIOS / scenario), f"{server_host}:{server_port}",
                "-i", "127.0.0.1", "-p", str(self.port), "-mi", "127.0.0.1", "-mp", str(free_udp_port()),
                "-m", str(calls), "-t", {"udp": "u1", "tcp": "t1"}[transport],
                "-nostdin", "-timeout", f"{int(timeout_s)}s", "-timeout_error",
                "-default_behaviors", "all,-bye", "-max_recv_loops", "1000",
                "-trace_msg", "-message_file", str(self.dir / "messages.log"),
                "-trace_err", "-error_file", str(self.dir / "errors.log"),
                "-trace_logs", "-log_file", str(self.dir / "logs.log")]
        if auth_uri:
            args += ["-auth_uri", auth_uri]
        if rows:
            args += ["-inf", str(write_csv(self.dir / "users.csv", rows))]
        if duration_ms is not None:
            args += ["-d", str(duration_ms)]
        if ooc:
            args += ["-oocsf", str(SCENARIOS / ooc)]
        for k, v in (sets or {}).items():
            args += ["-set", k, str(v)]
        args += extra or []
        self.args = args
        self.timeout_s = timeout_s

    def start(self) -> "Sipp":
        assert shutil.which("sipp"), "sipp not installed (Debian package sip-tester; `make test-deps`)"
        self.out = open(self.dir / "stdout.log", "wb")
        self.proc = subprocess.Popen(self.args, cwd=str(self.dir), stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        return self

    def wait_listening(self, timeout: float = 5.0) -> "Sipp":
        """Waits until sipp's UDP port is bound (a UAS must be up before traffic is sent to it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"sipp exited early: {self.describe()}"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", self.port))
                except OSError:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"sipp not listening on {self.port}: {self.describe()}")

    def wait(self, timeout: float | None = None) -> int:
        try:
            self.rc = self.proc.wait(timeout=timeout if timeout is not None else self.timeout_s + 15)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"sipp {self.name} still running: {self.describe()}") from None
        finally:
            self.out.close()
        return self.rc

    def run(self, timeout: float | None = None) -> int:
        return self.start().wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def _read(self, name: str) -> str:
        try:
            return (self.dir / name).read_text(errors="replace")
        except OSError:
            return ""

    def errors(self) -> str:
        return self._read("errors.log")

    def logs(self) -> list[str]:
        return [l for l in self._read("logs.log").splitlines() if l.strip()]

    def messages(self) -> list[SipMsg]:
        """Every message sipp sent/received, in order (parsed from the -trace_msg log)."""
        text = self._read("messages.log")
        out = []
        parts = re.split(r"\n?-{20,} [^\n]*\n(UDP|TCP) message (sent|received)[^\n]*\n", text)
        # parts: [prefix, proto, dir, msg, proto, dir, msg, ...]
        for i in range(1, len(parts) - 2, 3):
            raw = parts[i + 2].strip("\n").replace("\r\n", "\n").replace("\n", "\r\n")
            head, _, body = raw.partition("\r\n\r\n")
            m = parse_message((head + "\r\n\r\n").encode() + body.rstrip("\r\n").encode())
            m.direction = "sent" if parts[i + 1] == "sent" else "received"
            out.append(m)
        return out

    def received(self, method_or_status=None) -> list[SipMsg]:
        out = []
        for m in self.messages():
            if m.direction != "received":
                continue
            if method_or_status is None or (isinstance(method_or_status, int) and m.is_response
                                            and m.status == method_or_status) or \
                    (isinstance(method_or_status, str) and not m.is_response and m.method == method_or_status):
                out.append(m)
        return out

    def describe(self) -> str:
        msgs = self.messages()
        flow = [f"{'>>' if m.direction == 'sent' else '<<'} {m.start}" for m in msgs]
        return (f"sipp {self.name} rc={self.rc} args={' '.join(self.args)}\n flow={flow}\n"
                f" errors={self.errors()[-3000:]}\n logs={self.logs()[-20:]}\n"
                f" stdout={self._read('stdout.log')[-1500:]}")

    def assert_ok(self) -> None:
        assert self.rc == 0, self.describe()


def run_sipp(*a, **kw) -> Sipp:
    s = Sipp(*a, **kw)
    s.run()
    s.assert_ok()
    return s


# --------------------------------------------------------------------------------------------
# Kamailio (reference peer; also used by the benchmark)


class Kamailio:
    """A private Kamailio with Tests/bench/peers/kamailio.cfg on 127.0.0.1:<free port> (UDP+TCP),
    db_text tables in its own folder; started with -DD (no daemon) so stop() ends it all."""

    def __init__(self, tmp: Path, users: dict[str, str], domain: str = "localhost", port: int | None = None,
                 sha256: bool = False, children: int = 2, shm_mb: int = 64):
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port_pair()
        self.domain = domain
        db = self.tmp / "db"
        write_db(db, users, domain)
        self.args = ["kamailio", "-f", str(KAMAILIO_CFG), "-DD", "-E", "-n", str(children), "-m", str(shm_mb), "-M", "8",
                     "-P", str(self.tmp / "kamailio.pid"), "-Y", str(self.tmp),
                     "-l", f"udp:127.0.0.1:{self.port}", "-l", f"tcp:127.0.0.1:{self.port}",
                     "-A", f'DBURL="text://{db}"', "-A", f'SIPDOMAIN="{domain}"',
                     "-A", f'CONFDOMAIN="conference.{domain}"']
        if sha256:
            self.args += ["-A", "WITH_SHA256"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Kamailio":
        assert shutil.which("kamailio"), "kamailio not installed (Debian package kamailio)"
        self.log = open(self.tmp / "kamailio.log", "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"kamailio exited: {self.log_text()}"
            try:
                with SIPClient(self.port, timeout=0.5) as c:
                    data, _, cseq = c.build("OPTIONS", f"sip:{self.domain}")
                    c.send_raw(data)
                    if c.expect_response(cseq=cseq, timeout=0.5).status == 200:
                        return self
            except AssertionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"kamailio not answering on {self.port}: {self.log_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # -DD keeps the main process in the foreground; its children are in its session
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()

    def log_text(self, limit: int = 8000) -> str:
        try:
            return (self.tmp / "kamailio.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------
# baresip (Debian 1.0.0), headless


class Baresip:
    """baresip -f <dir> with generated config/accounts/contacts; ctrl_tcp for commands.

    Only loopback: sip_listen and ctrl_tcp on 127.0.0.1, the account's outbound proxy is the
    server under test. `-s` prints every SIP message; `received("MESSAGE")` parses them."""

    def __init__(self, tmp: Path, user: str, password: str, server_port: int, domain: str = "localhost",
                 contacts: list[str] | None = None, regint: int = 3600):
        self.dir = Path(tmp) / f"baresip-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user, self.domain = user, domain
        # baresip also listens for SIP TLS (TCP) on sip_port+1: that port must be free too,
        # and ctrl_tcp must stay away from it
        self.sip_port = free_port_pair()
        while not tcp_port_free(self.sip_port + 1):
            self.sip_port = free_port_pair()
        self.ctrl_port = free_port_pair()
        while self.ctrl_port in (self.sip_port, self.sip_port + 1):
            self.ctrl_port = free_port_pair()
        (self.dir / "config").write_text(f"""\
poll_method\tepoll
sip_listen\t127.0.0.1:{self.sip_port}
sip_trans_def\tudp
call_max_calls\t4
audio_player\taufile,/dev/null
audio_source\tausine,440
audio_alert\taufile,/dev/null
module_path\t/usr/lib/baresip/modules
module\tg711.so
module\tausine.so
module\taufile.so
module_app\taccount.so
module_app\tcontact.so
module_app\tmenu.so
module_app\tctrl_tcp.so
ctrl_tcp_listen\t127.0.0.1:{self.ctrl_port}
""")
        (self.dir / "accounts").write_text(
            f'<sip:{user}@{domain}>;auth_pass={password};outbound="sip:127.0.0.1:{server_port};transport=udp";'
            f"regint={regint};answermode=manual\n")
        (self.dir / "contacts").write_text("".join(f'"{c}" <sip:{c}@{domain}>\n' for c in (contacts or [])))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Baresip":
        assert shutil.which("baresip"), "baresip not installed (Debian package baresip)"
        self.out = open(self.dir / "stdout.log", "wb")
        # stdin: a pipe kept open (EOF on stdin makes the menu spin)
        self.proc = subprocess.Popen(["baresip", "-4", "-s", "-f", str(self.dir)], stdin=subprocess.PIPE,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"baresip exited: {self.log_text()}"
            try:
                with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"baresip ctrl_tcp not up: {self.log_text()}")

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        """Runs a menu command over ctrl_tcp (netstring JSON); returns the response object."""
        payload = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=timeout) as s:
            s.sendall(str(len(payload)).encode() + b":" + payload + b",")
            buf = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                m = re.match(rb"(\d+):", buf)
                if m and len(buf) >= m.end() + int(m.group(1)) + 1:
                    obj = json.loads(buf[m.end():m.end() + int(m.group(1))])
                    if obj.get("response"):
                        return obj
                    buf = buf[m.end() + int(m.group(1)) + 1:]
                    continue
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                buf += chunk
        raise AssertionError(f"baresip: no answer to {command}: {buf!r}; {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        try:
            return (self.dir / "stdout.log").read_bytes().replace(b"\0", b"").decode("utf-8", "replace")
        except OSError:
            return ""

    def trace(self) -> list[tuple[str, SipMsg]]:
        """SIP messages from the -s trace: [(direction 'in'/'out', message)]."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log_text())
        out = []
        for m in re.finditer(r"(?m)^(UDP|TCP) (\S+) -> (\S+)\n(.*?)(?=\n(?:UDP|TCP) \S+ -> |\Z)", text, re.S):
            raw = m.group(4)
            head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
            msg = parse_message(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body.split("\n#")[0].encode())
            direction = "out" if m.group(2).endswith(f":{self.sip_port}") else "in"
            out.append((direction, msg))
        return out

    def received(self, method: str) -> list[SipMsg]:
        return [m for d, m in self.trace() if d == "in" and not m.is_response and m.method == method]

    def responses(self, method: str) -> list[SipMsg]:
        return [m for d, m in self.trace() if d == "in" and m.is_response and m.cseq[1] == method]

    def wait_for(self, pred, what: str, timeout: float = T):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = pred()
            if r:
                return r
            time.sleep(0.1)
        raise AssertionError(f"baresip {self.user}: timed out waiting for {what}; log:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "out", None):
            self.out.close()

"""Helpers for the Switchboard integration tests: the server process and a line-protocol client.

Standard library only. Every blocking operation has a timeout so a test can fail but never hang.
"""

from __future__ import annotations

import os
import random
import re
import select
import signal
import socket
import ssl
import subprocess
import time
import tomllib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "conf" / "switchboard.toml"
BINARY = Path(os.environ.get("SWITCHBOARD_BIN", str(REPO / ".build" / "debug" / "switchboard")))

# Generous: the suite must pass on a loaded 2-core machine running a debug build.
READ_TIMEOUT = float(os.environ.get("SWB_TEST_READ_TIMEOUT", "5"))
START_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

MSG_RE = re.compile(r"^MSG (\S+) (\d+) (-?\d+) (\S+) (\S+)(?: (.*))?$", re.S)


# --------------------------------------------------------------------------------------------
# Sockets


@dataclass
class Exchange:
    received: bytes
    eof: bool        # the server closed its side (FIN, or TLS close_notify)
    reset: bool      # the connection was reset (what was in flight to us may be lost)


def send_while_reading(sock: socket.socket, data: bytes, timeout: float, chunk: int = 1 << 16) -> Exchange:
    """Sends `data` while reading what the server answers, until the server closes the
    connection or `timeout` passes; a server that stops listening is not an error here.

    One thread does both: an ssl.SSLSocket must not be read and written from two threads at
    once (OpenSSL's SSL object is not thread-safe; a concurrent read can report a bogus EOF)."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    sent = 0
    eof = reset = False
    sock.setblocking(False)
    try:
        while time.monotonic() < deadline:
            try:
                got = sock.recv(1 << 16)
                if not got:
                    eof = True
                    break
                received.extend(got)
                continue
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                pass
            except ConnectionResetError:
                eof = reset = True
                break
            want_write = sent < len(data)
            if want_write:
                try:
                    sent += sock.send(data[sent:sent + chunk])
                    continue
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(data)
            select.select([sock], [sock] if want_write else [], [], 0.05)
    finally:
        sock.setblocking(True)
    return Exchange(bytes(received), eof, reset)


# --------------------------------------------------------------------------------------------
# Config files


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port(udp: bool = False) -> int:
    """A TCP port free on 127.0.0.1 now; with `udp`, free for UDP as well (SIP binds both).

    Picked below the kernel's ephemeral range, so that no outgoing connection (or peer bound
    to port 0) can take it between now and the moment a server binds it, and never the same
    port twice in one test run."""
    lo, hi = _ephemeral_range()
    first, last = (10000, lo - 1) if lo > 12000 else (hi + 1, 65535)
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    for _ in range(500):
        port = random.randint(first, last)
        if port in _handed_out:
            continue
        try:
            for kind in kinds:
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise AssertionError(f"no free port in {first}–{last}")


def load_default_config() -> dict:
    with open(DEFAULT_CONFIG, "rb") as f:
        return tomllib.load(f)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(config: dict) -> str:
    """Writes a {section: {key: value}} dict as TOML (flat sections only, like conf/switchboard.toml)."""
    lines = []
    for section, keys in config.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def merge_config(base: dict, overrides: dict | None) -> dict:
    merged = {section: dict(keys) for section, keys in base.items()}
    for section, keys in (overrides or {}).items():
        merged.setdefault(section, {}).update(keys)
    return merged


def clean_env(extra: dict | None = None) -> dict:
    """The environment for the binary: no inherited SWITCHBOARD_* variable, fast PBKDF2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_ACCOUNTS_PBKDF2_ITERATIONS"] = "4096"
    env.update(extra or {})
    return env


def run_cli(args: Iterable[str], *, input: str | None = None, env: dict | None = None,
            cwd: Path | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BINARY), *args],
        input=input,
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=str(cwd) if cwd else None,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------------
# The server process


class Server:
    """One `switchboard serve` on a private data dir and free ports."""

    def __init__(self, tmp: Path, overrides: dict | None = None, env: dict | None = None):
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base = load_default_config()
        base = merge_config(base, {
            "server": {"data_dir": str(self.data_dir)},
            "line": {"enabled": True, "bind": "127.0.0.1"},
            # WebSocket (+ REST, /healthz, /metrics, the page); the listeners of
            # later issues off unless a test turns them on.
            "websocket": {"enabled": True, "bind": "127.0.0.1"},
        })
        for section in ("xmpp", "sip", "mqtt"):
            if section in base:
                base[section]["enabled"] = False
        self.config = merge_config(base, overrides)
        #: Sections whose port this harness picks (every listener a test gave no port).
        self._picked_ports = [section for section in ("line", "websocket", "xmpp", "sip")
                              if "port" in self.config.get(section, {})
                              and "port" not in (overrides or {}).get(section, {})]
        self._pick_ports()
        self.xmpp_enabled = bool(self.config.get("xmpp", {}).get("enabled"))
        self.sip_enabled = bool(self.config.get("sip", {}).get("enabled"))
        #: The XMPP domain ([server] domain) and its MUC service.
        self.domain = str(self.config.get("server", {}).get("domain", "localhost"))
        self.ws_enabled = bool(self.config.get("websocket", {}).get("enabled"))
        self.env = clean_env(env)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._ever_ready = False
        self.logs: list[Path] = []
        self._stderr = None

    def _pick_ports(self) -> None:
        """Free ports for the listeners the test left to us, and the config file that names them."""
        for section in self._picked_ports:
            self.config[section]["port"] = free_port(udp=section == "sip")
        self.port = int(self.config["line"]["port"])
        self.ws_port = int(self.config.get("websocket", {}).get("port", 0))
        #: The XMPP listener's port (off unless a test passes xmpp={"enabled": True}).
        self.xmpp_port = int(self.config.get("xmpp", {}).get("port", 0)) or None
        #: The SIP listener's port, UDP and TCP (off unless a test passes sip={"enabled": True}).
        self.sip_port = int(self.config.get("sip", {}).get("port", 0)) or None
        #: Base URLs of the WebSocket listener: http://127.0.0.1:<port> and ws://127.0.0.1:<port>/ws.
        self.http_url = f"http://127.0.0.1:{self.ws_port}"
        self.ws_url = f"ws://127.0.0.1:{self.ws_port}/ws"
        self.config_path = self.tmp / "switchboard.toml"
        self.config_path.write_text(dump_toml(self.config))

    # CLI -------------------------------------------------------------------------------------

    def cli(self, *args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Runs `switchboard <args> --config <this config>`."""
        full_env = dict(self.env)
        full_env.update(env or {})
        return run_cli([*args, "--config", str(self.config_path)], input=input, env=full_env, cwd=self.tmp)

    def add_user(self, name: str, password: str) -> None:
        r = self.cli("user", "add", name, "--password-stdin", input=password + "\n")
        assert r.returncode == 0, f"user add {name} failed: rc={r.returncode} stderr={r.stderr!r}"

    # process ---------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> "Server":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = self.tmp / f"serve-{self.starts}.log"
        self.logs.append(log)
        self._stderr = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=subprocess.STDOUT,
            env=self.env, cwd=str(self.tmp),
        )
        if wait:
            try:
                self.wait_ready()
            except AssertionError:
                # A port picked free a moment ago can be taken meanwhile (an outgoing
                # connection's or a peer's ephemeral port). Before any client has seen
                # the ports, picking again is the harness's business, not a failure.
                if self._ever_ready or self.starts > 3 or not self._picked_ports or self.running() \
                        or "Address already in use" not in self.log_text(4000):
                    raise
                self._close_log()
                self._pick_ports()
                return self.start(wait=True)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"switchboard serve exited with {rc} before listening:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    pass
                if self.ws_enabled:
                    with socket.create_connection(("127.0.0.1", self.ws_port), timeout=1.0):
                        pass
                if self.xmpp_enabled:
                    with socket.create_connection(("127.0.0.1", self.xmpp_port), timeout=1.0):
                        pass
                if self.sip_enabled:
                    with socket.create_connection(("127.0.0.1", self.sip_port), timeout=1.0):
                        pass
                self._ever_ready = True
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"line port {self.port} not accepting after {timeout}s:\n{self.log_text()}")
            time.sleep(0.1)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"switchboard did not exit {timeout}s after SIGTERM")
        finally:
            self._close_log()
        return rc

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def restart(self) -> "Server":
        if self.running():
            self.stop()
        return self.start()

    def teardown(self) -> None:
        if self.running():
            try:
                self.stop(timeout=10)
            except AssertionError:
                pass
        self._close_log()

    def _close_log(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def log_text(self, limit: int = 20000) -> str:
        parts = []
        for log in self.logs:
            try:
                data = log.read_bytes()
            except OSError:
                continue
            text = data.decode("utf-8", "replace")
            if len(text) > limit:
                text = "...\n" + text[-limit:]
            parts.append(f"----- {log.name} -----\n{text}")
        return "\n".join(parts)

    # clients ---------------------------------------------------------------------------------

    def client(self, user: str | None = None, password: str | None = None, **kw) -> "LineClient":
        c = LineClient(self.port, **kw)
        if user is not None:
            c.auth(user, password if password is not None else USERS[user])
        return c


# --------------------------------------------------------------------------------------------
# Line protocol client


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


@dataclass
class Msg:
    room: str
    seq: int
    ts: int
    user: str
    via: str
    text: str


def parse_msg(line: str) -> Msg:
    m = MSG_RE.match(line)
    assert m, f"not a MSG line: {line!r}"
    return Msg(m.group(1), int(m.group(2)), int(m.group(3)), m.group(4), m.group(5), m.group(6) or "")


def is_event(line: str) -> bool:
    """MSG/JOINED/PARTED lines may arrive between replies."""
    return line.startswith(("MSG ", "JOINED ", "PARTED "))


class LineClient:
    """A line-protocol connection with timed reads and a backlog of lines not yet consumed."""

    _counter = 0

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = READ_TIMEOUT,
                 rcvbuf: int | None = None, name: str | None = None):
        LineClient._counter += 1
        self.name = name or f"client{LineClient._counter}"
        self.timeout = timeout
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(max(timeout, 5.0))
        sock.connect((host, port))
        self.sock = sock
        self.buf = bytearray()
        self.backlog: deque[str] = deque()
        self.eof = False
        self.history: list[str] = []  # every line received, for failure messages

    # low level -------------------------------------------------------------------------------

    def send(self, line: str) -> None:
        self.send_raw(line.encode("utf-8") + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _read_line(self, deadline: float) -> str:
        """The next line from the socket. Raises Closed at EOF, TimeoutError at the deadline."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                raw = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                line = raw.decode("utf-8", "replace")
                self.history.append(line)
                return line
            if self.eof:
                raise Closed(f"{self.name}: connection closed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no complete line in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                raise TimeoutError(f"{self.name}: no complete line in time") from None
            except (ConnectionResetError, BrokenPipeError):
                self.eof = True
                continue
            if not chunk:
                self.eof = True
                if self.buf:
                    # A last line without its newline.
                    self.buf.extend(b"\n")
                continue
            self.buf.extend(chunk)

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _describe(self) -> str:
        recent = self.history[-15:]
        return f"{self.name}: backlog={list(self.backlog)[-15:]!r} last lines received={recent!r}"

    # reading ---------------------------------------------------------------------------------

    def next_line(self, timeout: float | None = None) -> str:
        """Strictly the next line (backlog first)."""
        if self.backlog:
            return self.backlog.popleft()
        try:
            return self._read_line(self._deadline(timeout))
        except TimeoutError:
            raise AssertionError(f"timed out waiting for a line; {self._describe()}") from None
        except Closed:
            raise AssertionError(f"connection closed while waiting for a line; {self._describe()}") from None

    @staticmethod
    def _matches(pattern, line: str) -> bool:
        if isinstance(pattern, re.Pattern):
            return pattern.search(line) is not None
        return line.startswith(pattern)

    def expect(self, pattern, timeout: float | None = None) -> str:
        """The first line matching `pattern` (a prefix string or compiled regex).

        Lines that do not match stay in the backlog, in order, for later calls."""
        return self._first(lambda line: self._matches(pattern, line), repr(pattern), timeout)

    def _first(self, wanted, what: str, timeout: float | None) -> str:
        """The first line (backlog first) for which `wanted` holds; the others stay in the backlog."""
        for i, line in enumerate(self.backlog):
            if wanted(line):
                del self.backlog[i]
                return line
        deadline = self._deadline(timeout)
        while True:
            try:
                line = self._read_line(deadline)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; {self._describe()}") from None
            except Closed:
                raise AssertionError(f"connection closed while waiting for {what}; {self._describe()}") from None
            if wanted(line):
                return line
            self.backlog.append(line)

    def reply(self, timeout: float | None = None) -> str:
        """The next command reply (OK/ERR/PONG), leaving MSG/JOINED/PARTED lines in the backlog."""
        return self._first(lambda line: not is_event(line), "a reply", timeout)

    def cmd(self, line: str, timeout: float | None = None) -> str:
        """Sends one command and returns its reply."""
        self.send(line)
        return self.reply(timeout)

    def lines_until(self, pattern, timeout: float | None = None) -> list[str]:
        """Every line (backlog first, in order) up to and including the first matching `pattern`."""
        out = []
        deadline = self._deadline(timeout)
        while True:
            if self.backlog:
                line = self.backlog.popleft()
            else:
                try:
                    line = self._read_line(deadline)
                except TimeoutError:
                    raise AssertionError(f"timed out waiting for {pattern!r}; got {out[-20:]!r}; {self._describe()}") from None
                except Closed:
                    raise AssertionError(f"closed while waiting for {pattern!r}; got {out[-20:]!r}; {self._describe()}") from None
            out.append(line)
            if self._matches(pattern, line):
                return out

    def drain(self, wait: float = 0.5) -> list[str]:
        """Everything that arrives within `wait` seconds (plus the backlog)."""
        out = list(self.backlog)
        self.backlog.clear()
        deadline = time.monotonic() + wait
        while True:
            try:
                out.append(self._read_line(deadline))
            except (TimeoutError, Closed):
                return out

    def read_until_closed(self, timeout: float | None = None) -> list[str]:
        """Reads every remaining line until EOF/reset; fails if the connection stays open."""
        out = list(self.backlog)
        self.backlog.clear()
        deadline = self._deadline(timeout)
        while True:
            try:
                out.append(self._read_line(deadline))
            except Closed:
                return out
            except TimeoutError:
                raise AssertionError(f"{self.name}: connection still open; lines={out[-20:]!r}") from None

    # commands --------------------------------------------------------------------------------

    def auth(self, user: str, password: str) -> str:
        r = self.cmd(f"AUTH {user} {password}")
        assert r == f"OK AUTH {user.lower()}", f"AUTH {user}: {r!r}"
        return r

    def join(self, room: str, since: int | None = None, timeout: float | None = None) -> tuple[int, list[str]]:
        """JOIN; returns (seq from `OK JOIN`, lines that came before it, e.g. the replay)."""
        self.send(f"JOIN {room}" if since is None else f"JOIN {room} {since}")
        lines = self.lines_until(re.compile(rf"^(OK JOIN {re.escape(room)} \d+$|ERR )"), timeout)
        last = lines[-1]
        assert last.startswith("OK JOIN"), f"JOIN {room}: {last!r} (before: {lines[:-1]!r})"
        return int(last.split()[3]), lines[:-1]

    def say(self, room: str, text: str, timeout: float | None = None) -> int:
        r = self.cmd(f"SAY {room} {text}", timeout)
        m = re.fullmatch(r"OK SAY (\d+)", r)
        assert m, f"SAY {room}: {r!r}"
        return int(m.group(1))

    def tell(self, user: str, text: str) -> int:
        r = self.cmd(f"TELL {user} {text}")
        m = re.fullmatch(r"OK TELL (\d+)", r)
        assert m, f"TELL {user}: {r!r}"
        return int(m.group(1))

    def history_cmd(self, room: str, limit: int | None = None, timeout: float | None = None) -> tuple[int, list[str]]:
        """HISTORY; returns (count from `OK HISTORY`, the lines before it).

        Lines already waiting in the backlog are live traffic from before the command: they are
        moved to `self.skipped` so they are not mistaken for history."""
        self.skipped = list(self.backlog)
        self.backlog.clear()
        self.send(f"HISTORY {room}" if limit is None else f"HISTORY {room} {limit}")
        lines = self.lines_until(re.compile(rf"^(OK HISTORY {re.escape(room)} \d+$|ERR )"), timeout)
        last = lines[-1]
        assert last.startswith("OK HISTORY"), f"HISTORY {room}: {last!r}"
        return int(last.split()[3]), lines[:-1]

    def ping(self, token: str = "p") -> None:
        r = self.cmd(f"PING {token}")
        assert r == f"PONG {token}", f"PING {token}: {r!r}"

    def expect_msg(self, room: str, text: str | None = None, user: str | None = None,
                   timeout: float | None = None) -> Msg:
        pat = rf"^MSG {re.escape(room)} \d+ -?\d+ "
        pat += re.escape(user) + " " if user else r"\S+ "
        pat += r"\S+"
        pat += (" " + re.escape(text) + "$") if text is not None else ""
        return parse_msg(self.expect(re.compile(pat), timeout))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def expect_err(line: str, code: str) -> None:
    assert line.startswith(f"ERR {code}"), f"expected ERR {code}, got {line!r}"
    assert re.match(rf"^ERR {re.escape(code)}( |$)", line), f"expected ERR {code}, got {line!r}"


def now_ms() -> int:
    return int(time.time() * 1000)


_unique = 0


def unique(prefix: str = "t") -> str:
    global _unique
    _unique += 1
    return f"{prefix}-{os.getpid()}-{_unique}"


def assert_chat_works(a: LineClient, b: LineClient, room: str = "lobby") -> None:
    """`a` says something unique in `room`; `b` (already joined) receives it."""
    text = unique("still-alive")
    seq = a.say(room, text)
    m = b.expect_msg(room, text, timeout=15)
    assert m.seq == seq, f"MSG seq {m.seq} != OK SAY {seq}"

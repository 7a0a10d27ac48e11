"""A synchronous WebSocket client for the Switchboard JSON protocol (protocols/websocket.md).

    c = WSClient(server.ws_url)           # or ws_client(server, "alice") for a logged-in one
    c.login("alice", "alice-pw")
    c.join("lobby")                       -> (joined frame, envelopes replayed before it)
    ack = c.say("lobby", "hello", client_id="c-1")
    c.expect("envelope", timeout=5)       -> the first frame with that op; other frames are
                                             kept, in order, for later recv/expect calls
    c.expect_envelope(room="lobby", body="hi", user="bob")
    c.expect_error("invalid_json")
    frames, code = c.read_until_closed()  -> remaining frames and the close code

Built on `websockets.sync.client`; every blocking call has a timeout, so a test can fail but
never hang. `RawWS` is a hand-made client over a plain socket (handshake, masked text frames,
frame parsing) for tests that must stop reading or send odd frames.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections import deque

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from swb import READ_TIMEOUT, USERS


class WSClosed(Exception):
    """The server closed the WebSocket."""


class WSClient:
    _counter = 0

    def __init__(self, url: str, name: str | None = None, timeout: float = READ_TIMEOUT,
                 max_size: int | None = 1 << 24, **connect_kw):
        WSClient._counter += 1
        self.name = name or f"ws{WSClient._counter}"
        self.url = url
        self.timeout = timeout
        # No client keepalive pings: they would be frames the test did not ask for.
        connect_kw.setdefault("ping_interval", None)
        # Entered like a context manager (and closed by close()): that is the usage every
        # websockets version supports without a deprecation warning.
        self.ws = connect(url, open_timeout=max(timeout, 5.0), close_timeout=5, max_size=max_size,
                          **connect_kw).__enter__()
        self.backlog: deque[dict] = deque()
        self.history: list[dict] = []      # every frame received, for failure messages
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = False
        self.user: str | None = None

    # sending ---------------------------------------------------------------------------------

    def send(self, op: dict) -> None:
        self.ws.send(json.dumps(op))

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def send_bytes(self, data: bytes) -> None:
        self.ws.send(data)

    # receiving -------------------------------------------------------------------------------

    def _describe(self) -> str:
        recent = [json.dumps(f)[:300] for f in self.history[-12:]]
        return (f"{self.name}: closed={self.closed} code={self.close_code} "
                f"backlog={len(self.backlog)} last frames={recent}")

    def _mark_closed(self, e: ConnectionClosed) -> None:
        self.closed = True
        rcvd = getattr(e, "rcvd", None)
        if rcvd is not None:
            self.close_code, self.close_reason = rcvd.code, rcvd.reason
        elif self.close_code is None:
            self.close_code = 1006

    def _read(self, deadline: float) -> dict:
        """The next frame from the socket. Raises WSClosed or TimeoutError."""
        if self.closed:
            raise WSClosed(self._describe())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(self._describe())
        try:
            data = self.ws.recv(timeout=remaining)
        except TimeoutError:
            raise TimeoutError(self._describe()) from None
        except ConnectionClosed as e:
            self._mark_closed(e)
            raise WSClosed(self._describe()) from None
        if isinstance(data, bytes):
            raise AssertionError(f"{self.name}: the server sent a binary frame: {data[:200]!r}")
        try:
            frame = json.loads(data)
        except ValueError:
            raise AssertionError(f"{self.name}: the server sent a text frame that is not JSON: {data[:300]!r}") from None
        assert isinstance(frame, dict) and isinstance(frame.get("op"), str), \
            f"{self.name}: frame without op: {data[:300]!r}"
        self.history.append(frame)
        return frame

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def recv(self, timeout: float | None = None) -> dict:
        """Strictly the next frame (backlog first)."""
        if self.backlog:
            return self.backlog.popleft()
        try:
            return self._read(self._deadline(timeout))
        except TimeoutError:
            raise AssertionError(f"timed out waiting for a frame; {self._describe()}") from None
        except WSClosed:
            raise AssertionError(f"connection closed while waiting for a frame; {self._describe()}") from None

    def first(self, wanted, what: str, timeout: float | None = None) -> dict:
        """The first frame (backlog first) for which `wanted(frame)` holds; others stay buffered."""
        for i, frame in enumerate(self.backlog):
            if wanted(frame):
                del self.backlog[i]
                return frame
        deadline = self._deadline(timeout)
        while True:
            try:
                frame = self._read(deadline)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; {self._describe()}") from None
            except WSClosed:
                raise AssertionError(f"connection closed while waiting for {what}; {self._describe()}") from None
            if wanted(frame):
                return frame
            self.backlog.append(frame)

    def expect(self, op: str, timeout: float | None = None, where=None, **fields) -> dict:
        """The first frame with this op whose top-level fields equal `fields` (and `where(frame)`)."""
        def wanted(f: dict) -> bool:
            return (f.get("op") == op and all(f.get(k) == v for k, v in fields.items())
                    and (where is None or where(f)))
        return self.first(wanted, f"op={op} {fields}", timeout)

    def expect_envelope(self, timeout: float | None = None, where=None, **fields) -> dict:
        """The first `envelope` frame whose envelope has these fields; `user`/`via` match `from`.
        Returns the envelope itself."""
        user = fields.pop("user", None)
        via = fields.pop("via", None)

        def wanted(f: dict) -> bool:
            if f.get("op") != "envelope":
                return False
            e = f.get("envelope") or {}
            return (all(e.get(k) == v for k, v in fields.items())
                    and (user is None or (e.get("from") or {}).get("user") == user)
                    and (via is None or (e.get("from") or {}).get("via") == via)
                    and (where is None or where(e)))
        what = f"envelope {fields} user={user} via={via}"
        return self.first(wanted, what, timeout)["envelope"]

    def expect_error(self, code: str, timeout: float | None = None, **fields) -> dict:
        frame = self.expect("error", timeout=timeout, **fields)
        assert frame.get("code") == code, f"{self.name}: expected error {code}, got {frame}"
        assert isinstance(frame.get("message"), str), f"error without message: {frame}"
        return frame

    def next_reply(self, timeout: float | None = None) -> dict:
        """The next frame that is not room traffic (`envelope`/`occupants`), for request/answer."""
        return self.first(lambda f: f.get("op") not in ("envelope", "occupants"), "a reply", timeout)

    def drain(self, wait: float = 0.5) -> list[dict]:
        """The backlog plus whatever arrives within `wait` seconds."""
        out = list(self.backlog)
        self.backlog.clear()
        deadline = time.monotonic() + wait
        while True:
            try:
                out.append(self._read(deadline))
            except (TimeoutError, WSClosed):
                return out

    def read_until_closed(self, timeout: float | None = None) -> tuple[list[dict], int | None]:
        """Every remaining frame until the server closes; fails if it stays open."""
        out = list(self.backlog)
        self.backlog.clear()
        deadline = self._deadline(timeout)
        while True:
            try:
                out.append(self._read(deadline))
            except WSClosed:
                return out, self.close_code
            except TimeoutError:
                raise AssertionError(f"{self.name}: connection still open after the timeout; "
                                     f"frames={[json.dumps(f)[:200] for f in out[-10:]]}") from None

    # requests --------------------------------------------------------------------------------

    def login(self, user: str, password: str | None = None, timeout: float | None = None) -> dict:
        self.send({"op": "auth", "user": user, "password": password if password is not None else USERS[user]})
        r = self.next_reply(timeout)
        assert r == {"op": "authenticated", "user": user.lower()}, f"{self.name}: auth {user}: {r}"
        self.user = user.lower()
        return r

    def login_token(self, token: str, user: str, timeout: float | None = None) -> dict:
        self.send({"op": "auth", "token": token})
        r = self.next_reply(timeout)
        assert r == {"op": "authenticated", "user": user}, f"{self.name}: auth with token: {r}"
        self.user = user
        return r

    def join(self, room: str, since: int | None = None, timeout: float | None = None) -> tuple[dict, list[dict]]:
        """Sends join; returns (the `joined` frame, the envelopes that came before it).

        Frames already in the backlog are live traffic from before the join: they stay there."""
        op = {"op": "join", "room": room}
        if since is not None:
            op["since"] = since
        old = list(self.backlog)
        self.backlog.clear()
        self.send(op)
        before: list[dict] = []
        deadline = self._deadline(timeout)
        try:
            while True:
                try:
                    f = self._read(deadline)
                except TimeoutError:
                    raise AssertionError(f"{self.name}: no joined for {room}; got {before[-10:]}; {self._describe()}") from None
                except WSClosed:
                    raise AssertionError(f"{self.name}: closed while joining {room}; {self._describe()}") from None
                if f.get("op") == "joined" and f.get("room") == room:
                    assert isinstance(f.get("seq"), int), f"joined without an integer seq: {f}"
                    return f, [x["envelope"] for x in before if x.get("op") == "envelope" and x["envelope"].get("room") == room]
                if f.get("op") == "error":
                    raise AssertionError(f"{self.name}: join {room}: {f}")
                before.append(f)
        finally:
            # keep unrelated frames (other rooms, occupants of earlier joins) for later
            rest = [x for x in before if not (x.get("op") == "envelope" and x["envelope"].get("room") == room)]
            self.backlog.extendleft(reversed(old + rest))

    def say(self, room: str, body: str, client_id: str | None = None, timeout: float | None = None,
            **extra) -> dict:
        """send + wait for its ack (matched by client_id; one is made up when not given)."""
        if client_id is None:
            client_id = f"{self.name}-{time.monotonic_ns()}"
        op = {"op": "send", "room": room, "body": body, "client_id": client_id, **extra}
        self.send(op)
        frame = self.first(lambda f: f.get("op") in ("ack", "error") and f.get("client_id") == client_id,
                           f"ack for {client_id}", timeout)
        assert frame["op"] == "ack", f"{self.name}: send {room} {body[:50]!r}: {frame}"
        return frame

    def ping(self, timeout: float | None = None) -> None:
        self.send({"op": "ping"})
        self.expect("pong", timeout=timeout)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ws_client(server, user: str | None = None, password: str | None = None, **kw) -> WSClient:
    c = WSClient(server.ws_url, **kw)
    if user is not None:
        c.login(user, password)
    return c


# --------------------------------------------------------------------------------------------
# A raw client over a plain socket


class RawWS:
    """WebSocket by hand: handshake, masked client frames, frame parsing. Reads only when asked,
    so it can play a client that stopped reading (with a small receive buffer)."""

    def __init__(self, host: str, port: int, path: str = "/ws", rcvbuf: int | None = None,
                 timeout: float = READ_TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError("no handshake answer")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"closed during the handshake: {bytes(self.buf)!r}")
            self.buf.extend(chunk)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        status = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status + b" ", f"handshake refused: {head!r}"

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True) -> None:
        """One frame, masked unless `masked` is False; `rsv` goes into the three reserved bits (0-7)."""
        b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode
        bit = 0x80 if masked else 0
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", b0, bit | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", b0, bit | 126, n)
        else:
            header = struct.pack("!BBQ", b0, bit | 127, n)
        if not masked:
            self.sock.sendall(header + payload)
            return
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_json(self, op: dict) -> None:
        self.send_frame(0x1, json.dumps(op).encode())

    def _fill(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("raw ws: timed out")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                raise TimeoutError("raw ws: timed out") from None
            except (ConnectionResetError, BrokenPipeError):
                return False
            if not chunk:
                return False
            self.buf.extend(chunk)
        return True

    def read_frame(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame; None at EOF/reset. Raises TimeoutError."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self._fill(2, deadline):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if not self._fill(4, deadline):
                return None
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            if not self._fill(10, deadline):
                return None
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        if b1 & 0x80:
            pos += 4  # servers do not mask, but be lenient
        if not self._fill(pos + n, deadline):
            return None
        payload = bytes(self.buf[pos:pos + n])
        del self.buf[:pos + n]
        return b0 & 0x0F, payload

    def recv_json(self, timeout: float | None = None) -> dict:
        while True:
            fr = self.read_frame(timeout)
            assert fr is not None, "raw ws: closed"
            opcode, payload = fr
            if opcode == 0x9:           # ping -> pong
                self.send_frame(0xA, payload)
                continue
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                raise AssertionError(f"raw ws: close frame {payload!r}")

    def read_until_closed(self, timeout: float) -> tuple[list[tuple[int, bytes]], bool]:
        """Reads every frame until EOF/reset; returns (frames, closed). closed is False when the
        connection was still open at the timeout."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                fr = self.read_frame(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return frames, False
            if fr is None:
                return frames, True
            frames.append(fr)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

"""What one connection may cost the server: a `join` far behind is replayed page by page as the
client reads it (WebSocket and line), plain HTTP connections are capped and time out, a request
the HTTP parser cannot read is answered 400, and a WebSocket peer that drops its socket without
a close frame leaves its rooms at once."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time

from swb import USERS, parse_msg
from wsclient import ws_client
from xmpp_helpers import rss_kib


def post_many(server, room: str, count: int, body_bytes: int, user: str = "alice") -> list[int]:
    """Publishes `count` messages of `body_bytes` through REST on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.ws_port, timeout=30)
    conn.request("POST", "/api/v1/token", json.dumps({"user": user, "password": USERS[user]}),
                 {"Content-Type": "application/json"})
    token = json.loads(conn.getresponse().read())["token"]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    seqs = []
    for i in range(count):
        body = f"{i:06d} " + "x" * (body_bytes - 7)
        conn.request("POST", f"/api/v1/rooms/{room}/messages", json.dumps({"body": body}), headers)
        r = conn.getresponse()
        answer = json.loads(r.read())
        assert r.status == 201, answer
        seqs.append(answer["seq"])
    conn.close()
    return seqs


def test_a_far_behind_join_is_replayed_whole_and_in_order(server):
    """1,234 missed envelopes (more than a dozen replay pages) arrive exactly once, in seq order,
    before `joined`, on WebSocket and on the line protocol."""
    seqs = post_many(server, "backlog", 1234, 40)

    ws = ws_client(server, "bob")
    joined, replay = ws.join("backlog", since=0, timeout=30)
    chats = [e for e in replay if e["kind"] == "chat"]
    assert [e["seq"] for e in chats] == seqs
    assert [e["body"][:6] for e in chats] == [f"{i:06d}" for i in range(1234)]
    assert [e["seq"] for e in replay] == list(range(1, joined["seq"] + 1))

    line = server.client("carol")
    seq, lines = line.join("backlog", since=0, timeout=30)
    msgs = [parse_msg(ln) for ln in lines if ln.startswith("MSG ")]
    # The line protocol shows chat as MSG (the joins after them as JOINED lines).
    assert [m.seq for m in msgs] == seqs and seq > seqs[-1]
    assert [m.text[:6] for m in msgs if m.via == "rest"] == [f"{i:06d}" for i in range(1234)]


def test_a_replay_nobody_reads_costs_a_page_not_the_history(server):
    """Clients that join 24 MB of history with `since` and never read cost the server a few
    pages each, not the history; the server keeps serving everyone else and still stops on
    SIGTERM within its grace period."""
    post_many(server, "heavy", 1500, 16000)
    before = rss_kib(server.proc.pid)
    stuck = []
    for i in range(6):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(f"AUTH alice {USERS['alice']}\nJOIN heavy 0\n".encode())
        stuck.append(s)
    time.sleep(3)
    grown_mib = (rss_kib(server.proc.pid) - before) / 1024
    # Reading the whole history for each would be 6 x 24 MB, and more as envelopes and lines
    # (~420 MiB, measured before replays were paged); a page each is a few MB.
    assert grown_mib < 100, f"RSS grew {grown_mib:.0f} MiB for 6 stalled replays"
    a = server.client("bob")
    a.join("lobby")
    assert a.say("lobby", "still here") > 0
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    assert time.monotonic() - start < 15
    for s in stuck:
        s.close()


def raw_http(server, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            raise AssertionError(f"no answer and no close within {timeout} s; got {out[:200]!r}")
        except ConnectionResetError:
            # Closed with part of a large request unread: the kernel resets after the answer.
            assert out, "reset without an answer"
        return out


def test_requests_the_http_parser_cannot_read_get_400_and_a_close(server):
    for request in [
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    ]:
        answer = raw_http(server, request)
        assert answer.startswith(b"HTTP/1.1 400 "), (request[:60], answer[:200])
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "bad_request" and "malformed HTTP request" in error["message"], error
    assert raw_http(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_plain_http_connections_are_capped_and_time_out(make_server):
    server = make_server(websocket={"max_http_connections": 4, "http_idle_timeout_seconds": 2})
    # Upgraded connections leave the HTTP count: three WebSockets, then four HTTP slots.
    sockets = [ws_client(server, user) for user in ("alice", "bob", "carol")]
    held = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", server.ws_port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        held.append(s)
    time.sleep(0.3)
    # A fifth plain connection gets 503 at once.
    answer = raw_http(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
    # The half-sent requests are closed after the idle timeout, which frees the slots.
    start = time.monotonic()
    for s in held:
        assert s.recv(100) == b"", "a half-sent request was answered instead of closed"
    assert time.monotonic() - start < 6
    assert raw_http(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    # The WebSockets, idle as long, keep no HTTP idle timer.
    for ws in sockets:
        ws.ping()
    for s in held:
        s.close()


def test_a_websocket_peer_that_drops_its_socket_leaves_at_once(server):
    bob = ws_client(server, "bob")
    bob.join("ghost")
    alice = server.client("alice")
    alice.join("ghost")
    assert "bob/ws" in alice.cmd("WHO ghost")
    bob.ws.socket.close()          # TCP gone, no close frame
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and "bob/ws" in alice.cmd("WHO ghost"):
        time.sleep(0.1)
    assert "bob/ws" not in alice.cmd("WHO ghost")


def test_closed_connections_leave_no_memory_behind(make_server):
    """A connection's handler and its state (an XMPP connection's libxml2 parser among it) go
    with the connection: opening and closing thousands leaves RSS where it was. Each XMPP
    connection used to keep ~13 KB and each line connection ~1.3 KB for good."""
    server = make_server(xmpp={"enabled": True})

    def churn(port: int, count: int) -> None:
        for _ in range(count):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        time.sleep(1)

    for port, count, limit_mib in ((server.xmpp_port, 2000, 8), (server.port, 4000, 3)):
        churn(port, 300)     # warm-up: pools and caches reach their size
        before = rss_kib(server.proc.pid)
        churn(port, count)
        grown_mib = (rss_kib(server.proc.pid) - before) / 1024
        assert grown_mib < limit_mib, f"RSS grew {grown_mib:.1f} MiB over {count} closed connections on port {port}"

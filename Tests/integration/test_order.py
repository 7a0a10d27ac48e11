"""Per-room order across concurrent senders."""

import threading

import pytest

from swb import parse_msg

PER_SENDER = 50


def test_concurrent_senders_everyone_sees_same_order(server):
    senders = {u: server.client(u, timeout=30) for u in ("alice", "bob", "carol")}
    for c in senders.values():
        c.join("lobby")
    # A second alice connection as a pure observer: it sees all 150 messages
    # (alice's too, since it is not the sending connection) and adds no join envelope.
    observer = server.client("alice", timeout=30)
    base, _ = observer.join("lobby")
    # Let the JOINED lines of the senders settle out of the way.
    for u, c in senders.items():
        c.ping("ready")

    results = {}
    errors = []

    def run(user, client):
        try:
            payload = "".join(f"SAY lobby {user}-{i}\n" for i in range(PER_SENDER)).encode()
            start.wait(10)
            client.send_raw(payload)  # pipelined: all 50 at once
            acks, msgs = [], []
            expected_msgs = 2 * PER_SENDER
            while len(acks) < PER_SENDER or len(msgs) < expected_msgs:
                line = client.next_line(timeout=30)
                if line.startswith("OK SAY "):
                    acks.append(int(line.split()[2]))
                elif line.startswith("MSG "):
                    msgs.append(parse_msg(line))
                elif line.startswith("ERR"):
                    raise AssertionError(f"{user}: {line}")
            results[user] = (acks, msgs)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    start = threading.Event()
    threads = [threading.Thread(target=run, args=(u, c), daemon=True) for u, c in senders.items()]
    for t in threads:
        t.start()
    start.set()

    total = 3 * PER_SENDER
    seen = []
    while len(seen) < total:
        line = observer.next_line(timeout=30)
        if line.startswith("MSG "):
            seen.append(parse_msg(line))
    for t in threads:
        t.join(90)
    if errors:
        raise errors[0]
    assert all(not t.is_alive() for t in threads), "a sender did not finish"

    # The observer: consecutive seqs right after its OK JOIN, each text once.
    seqs = [m.seq for m in seen]
    assert seqs == list(range(base + 1, base + 1 + total)), f"gaps/duplicates/disorder: {seqs}"
    texts = [m.text for m in seen]
    assert sorted(texts) == sorted(f"{u}-{i}" for u in senders for i in range(PER_SENDER))
    by_seq = {m.seq: (m.user, m.text) for m in seen}

    # Each sender's messages keep the sender's order.
    for u in senders:
        own = [int(t.split("-")[1]) for t in texts if t.startswith(u + "-")]
        assert own == list(range(PER_SENDER)), f"{u}'s messages reordered: {own}"

    for u, (acks, msgs) in results.items():
        # Its acks are in command order and match the observer's view.
        assert acks == sorted(acks), f"{u}: OK SAY seqs out of order: {acks}"
        for i, seq in enumerate(acks):
            assert by_seq[seq] == (u, f"{u}-{i}"), f"{u}: OK SAY {seq} is {by_seq.get(seq)} for the observer"
        # It receives the others' messages in seq order, exactly those.
        mseqs = [m.seq for m in msgs]
        assert mseqs == sorted(mseqs), f"{u}: MSG out of seq order"
        assert len(set(mseqs)) == len(mseqs), f"{u}: duplicate MSG"
        assert sorted(mseqs + acks) == list(range(base + 1, base + 1 + total)), f"{u}: gap in its view"
        for m in msgs:
            assert m.user != u, f"{u} received its own message {m}"
            assert by_seq[m.seq] == (m.user, m.text)


@pytest.mark.server_config(line={"rate_per_second": 10000, "rate_burst": 10000})
def test_many_pipelined_commands_replies_in_order(server):
    a = server.client("alice", timeout=30)
    a.join("lobby")
    payload = "".join(f"PING {i}\nSAY lobby m{i}\n" for i in range(300)).encode()
    a.send_raw(payload)
    last = None
    for i in range(300):
        assert a.reply() == f"PONG {i}"
        r = a.reply()
        assert r.startswith("OK SAY "), r
        seq = int(r.split()[2])
        if last is not None:
            assert seq == last + 1
        last = seq

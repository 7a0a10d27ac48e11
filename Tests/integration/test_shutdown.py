"""SIGTERM: every connection gets ERR shutting_down and EOF, exit 0, history intact."""

import signal
import subprocess

from swb import parse_msg

# shutdown_grace_seconds defaults to 5; allow some slack for a loaded machine.
EXIT_DEADLINE = 8.0


def test_sigterm_says_goodbye_and_exits_zero(server):
    a = server.client("alice")
    b = server.client("bob")
    unauth = server.client()
    a.join("lobby")
    b.join("lobby")
    seqs = [a.say("lobby", f"before-shutdown-{i}") for i in range(10)]
    for i in range(10):
        b.expect_msg("lobby", f"before-shutdown-{i}")

    server.proc.send_signal(signal.SIGTERM)
    for c in (a, b, unauth):
        lines = c.read_until_closed(timeout=EXIT_DEADLINE)
        assert any(l.startswith("ERR shutting_down") for l in lines), (c.name, lines)
    try:
        rc = server.proc.wait(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"switchboard still running {EXIT_DEADLINE}s after SIGTERM") from None
    assert rc == 0, f"exit status {rc} after SIGTERM"

    server.start()
    c = server.client("carol")
    count, lines = c.history_cmd("lobby", 100)
    got = {m.seq: m.text for m in (parse_msg(l) for l in lines if l.startswith("MSG"))}
    for i, seq in enumerate(seqs):
        assert got.get(seq) == f"before-shutdown-{i}"
    # And the restarted server works.
    c.join("lobby")
    assert c.say("lobby", "after restart") > seqs[-1]


def test_sigterm_answers_pipelined_commands_first(server):
    """Replies to what a client had already sent come before ERR shutting_down."""
    a = server.client("alice", timeout=15)
    a.join("lobby")
    a.send_raw("".join(f"SAY lobby piped-{i}\n" for i in range(50)).encode())
    first = a.reply()  # the server has read (at least the start of) the batch
    assert first.startswith("OK SAY "), first
    server.proc.send_signal(signal.SIGTERM)
    lines = [first] + a.read_until_closed(timeout=EXIT_DEADLINE)
    assert lines[-1].startswith("ERR shutting_down"), lines[-5:]
    acks = [int(l.split()[2]) for l in lines if l.startswith("OK SAY ")]
    # Nothing but acks (and possibly ERR shutting_down for commands it no longer took) before the goodbye.
    others = [l for l in lines[:-1] if not l.startswith(("OK SAY ", "ERR shutting_down"))]
    assert not others, others
    assert acks == sorted(acks)
    assert server.proc.wait(timeout=EXIT_DEADLINE) == 0

    server.start()
    c = server.client("bob")
    _, hist = c.history_cmd("lobby", 1000)
    got = {m.seq for m in (parse_msg(l) for l in hist if l.startswith("MSG"))}
    assert set(acks) <= got, f"acked before shutdown but missing: {sorted(set(acks) - got)}"

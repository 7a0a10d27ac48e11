"""Text escaping: \\n, \\r and \\\\ in both directions; UTF-8; CRLF line endings."""

import pytest

from swb import parse_msg


@pytest.fixture
def pair(server):
    a = server.client("alice")
    b = server.client("bob")
    a.join("lobby")
    b.join("lobby")
    return a, b


# (what the client writes after "SAY lobby ", what the other client must read)
CASES = [
    (r"line1\nline2", r"line1\nline2"),            # LF escape stays one line
    (r"a\rb", r"a\rb"),                            # CR escape
    (r"back\\slash", r"back\\slash"),              # an escaped backslash round-trips
    (r"C:\temp", r"C:\\temp"),                     # a lone backslash is literal, sent back escaped
    (r"end\\", r"end\\"),
    (r"two\\nlines?", r"two\\nlines?"),            # backslash then 'n', not a newline
    ("tab\there", "tab\there"),                    # a tab is allowed as is
    ("héllo wörld ✓ 😀", "héllo wörld ✓ 😀"),
    ("  leading and trailing spaces  ", "  leading and trailing spaces  "),
]


@pytest.mark.parametrize("sent,expected", CASES, ids=[c[0] for c in CASES])
def test_escape_round_trip(pair, sent, expected):
    a, b = pair
    seq = a.say("lobby", sent)
    line = b.expect(f"MSG lobby {seq} ")
    m = parse_msg(line)
    assert m.text == expected, f"sent {sent!r}, other client got {m.text!r}"
    # History shows the same.
    _, lines = b.history_cmd("lobby", 1)
    assert parse_msg(lines[0]).text == expected


def test_multiline_body_arrives_on_one_line(pair):
    a, b = pair
    seq = a.say("lobby", r"first\nsecond\nthird")
    line = b.expect(f"MSG lobby {seq} ")
    assert line.endswith(r"first\nsecond\nthird")
    # The very next line is a fresh one (no stray "second" line).
    s2 = a.say("lobby", "next")
    assert b.next_line().startswith(f"MSG lobby {s2} ")


def test_crlf_line_endings(pair):
    a, b = pair
    a.send_raw(b"SAY lobby crlf body\r\nPING crlf\r\n")
    r = a.reply()
    assert r.startswith("OK SAY "), r
    assert a.reply() == "PONG crlf"
    m = b.expect_msg("lobby", user="alice")
    assert m.text == "crlf body"


def test_lowercase_commands(pair):
    a, b = pair
    r = a.cmd("say lobby lower")
    assert r.startswith("OK SAY "), r
    assert b.expect_msg("lobby", user="alice").text == "lower"
    assert a.cmd("ping x") == "PONG x"

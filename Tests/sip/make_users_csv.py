#!/usr/bin/env python3
"""Writes a sipp injection file (-inf) in the format every scenario of Tests/sip/scenarios reads:

    SEQUENTIAL
    user;[authentication username=user password=pw];domain;target;expires;body

field0 user, field1 the credentials as a whole [authentication] keyword (sipp 3.6.1 substitutes no
[fieldN] inside [authentication ...], but does parse one that an injected field holds), field2
the SIP domain, field3 the target (callee user, or room for message_room.xml), field4 the
REGISTER Expires value, field5 the text of a MESSAGE (message_room.xml, bench_message.xml).

    make_users_csv.py OUT.csv --user alice:alice-pw --target bob [--domain localhost] [--expires 3600]
    make_users_csv.py OUT.csv --count 1000 [--target bob]   # u0000..u0999 / pw-u0000.. (bench)
"""
from __future__ import annotations

import argparse
from pathlib import Path


def csv_line(user: str, password: str, domain: str = "localhost", target: str = "", expires: int = 3600,
             body: str | None = None) -> str:
    body = f"hello from {user}" if body is None else body
    for ch in ";\n]":
        assert ch not in user + password + target + body, f"cannot put {ch!r} into a sipp CSV field"
    return f"{user};[authentication username={user} password={password}];{domain};{target};{expires};{body}"


def write_csv(path: Path, rows: list[tuple], order: str = "SEQUENTIAL") -> Path:
    path.write_text(order + "\n" + "\n".join(csv_line(*r) for r in rows) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--user", action="append", default=[], help="name:password (repeatable)")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--domain", default="localhost")
    ap.add_argument("--target", default="")
    ap.add_argument("--expires", type=int, default=3600)
    ap.add_argument("--body", default=None)
    a = ap.parse_args()
    rows = [(u.split(":", 1)[0], u.split(":", 1)[1], a.domain, a.target, a.expires, a.body) for u in a.user]
    rows += [(f"u{i:04d}", f"pw-u{i:04d}", a.domain, a.target, a.expires, a.body) for i in range(a.count)]
    write_csv(Path(a.out), rows)


if __name__ == "__main__":
    main()

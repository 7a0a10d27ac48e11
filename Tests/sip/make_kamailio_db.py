#!/usr/bin/env python3
"""Writes the db_text tables Kamailio's auth_db needs (`version`, `subscriber`) into a folder.

    make_kamailio_db.py DIR [--domain localhost] [--users alice:alice-pw,bob:bob-pw] [--count N]

--count N adds users u0000..u(N-1) with passwords pw-u0000.. (the bench CSV of
Tests/sip/make_users_csv.py uses the same names). Passwords are stored in plaintext
(auth_db calculate_ha1 = yes).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path


def write_db(folder: Path, users: dict[str, str], domain: str = "localhost") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "version").write_text(
        "id(int,auto) table_name(string) table_version(int) \n"
        "0:version:1\n0:subscriber:7\n0:location:9\n0:location_attrs:1\n")
    lines = ["id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) "]
    for i, (name, pw) in enumerate(users.items(), 1):
        for ch in ":\\\n":
            assert ch not in name + pw, "db_text needs escaping for " + repr(ch)
        ha1 = hashlib.md5(f"{name}:{domain}:{pw}".encode()).hexdigest()
        ha1b = hashlib.md5(f"{name}@{domain}:{domain}:{pw}".encode()).hexdigest()
        lines.append(f"{i}:{name}:{domain}:{pw}:{ha1}:{ha1b}")
    (folder / "subscriber").write_text("\n".join(lines) + "\n")


def bench_users(count: int) -> dict[str, str]:
    return {f"u{i:04d}": f"pw-u{i:04d}" for i in range(count)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--domain", default="localhost")
    ap.add_argument("--users", default="alice:alice-pw,bob:bob-pw,carol:carol-pw")
    ap.add_argument("--count", type=int, default=0)
    a = ap.parse_args()
    users = dict(u.split(":", 1) for u in a.users.split(",") if u)
    users.update(bench_users(a.count))
    write_db(Path(a.dir), users, a.domain)


if __name__ == "__main__":
    main()

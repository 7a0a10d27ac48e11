"""The command line: check-config, user, room, version, --help, environment overrides."""

import re

import pytest

import swb
from swb import expect_err


def _write(tmp_path, config: dict, name="c.toml"):
    p = tmp_path / name
    p.write_text(swb.dump_toml(config))
    return p


def _config(tmp_path, overrides=None):
    base = swb.load_default_config()
    base["server"]["data_dir"] = str(tmp_path / "data")
    return swb.merge_config(base, overrides)


def _check(path, env=None, cwd=None):
    return swb.run_cli(["check-config", "--config", str(path)], env=swb.clean_env(env), cwd=cwd)


# ---------------------------------------------------------------------------------- check-config


def test_check_config_accepts_the_shipped_config(binary, tmp_path):
    r = _check(swb.DEFAULT_CONFIG, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert any(l.startswith("configuration OK") for l in (r.stdout + r.stderr).splitlines()), (r.stdout, r.stderr)


@pytest.mark.parametrize("section,key,value", [
    ("line", "port", "abc"),
    ("line", "port", 70000),
    ("line", "port", -1),
    ("log", "level", "loud"),
    ("line", "enabled", "yes"),
    ("history", "synchronous", "sometimes"),
])
def test_check_config_names_the_bad_key(binary, tmp_path, section, key, value):
    p = _write(tmp_path, _config(tmp_path, {section: {key: value}}))
    r = _check(p, cwd=tmp_path)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert f"{section}.{key}" in r.stderr, r.stderr
    assert "configuration OK" not in r.stdout


def test_check_config_unknown_key_and_section(binary, tmp_path):
    p = _write(tmp_path, _config(tmp_path, {"line": {"prot": 7001}}))
    r = _check(p, cwd=tmp_path)
    assert r.returncode == 1
    assert "unknown key 'line.prot'" in r.stderr, r.stderr

    p = _write(tmp_path, _config(tmp_path, {"foo": {"bar": 1}}), "c2.toml")
    r = _check(p, cwd=tmp_path)
    assert r.returncode == 1
    assert "unknown section 'foo'" in r.stderr, r.stderr


def test_check_config_reports_every_problem(binary, tmp_path):
    p = _write(tmp_path, _config(tmp_path, {"line": {"port": "abc", "prot": 1}, "log": {"level": "loud"}}))
    r = _check(p, cwd=tmp_path)
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    for needle in ("line.port", "line.prot", "log.level"):
        assert sum(needle in l for l in lines) >= 1, (needle, r.stderr)
    # one line per problem
    assert len([l for l in lines if re.search(r"line\.port|line\.prot|log\.level", l)]) >= 3, r.stderr


def test_check_config_syntax_error_and_missing_file(binary, tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[line\nport = \n")
    r = _check(p, cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip()
    r = _check(tmp_path / "does-not-exist.toml", cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip()


def test_env_overrides_are_validated(binary, tmp_path):
    p = _write(tmp_path, _config(tmp_path))
    r = _check(p, env={"SWITCHBOARD_LINE_PORT": "abc"}, cwd=tmp_path)
    assert r.returncode == 1
    assert "line.port" in r.stderr or "SWITCHBOARD_LINE_PORT" in r.stderr, r.stderr

    r = _check(p, env={"SWITCHBOARD_LINE_PROT": "7001"}, cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "line.prot" in r.stderr or "SWITCHBOARD_LINE_PROT" in r.stderr, r.stderr

    r = _check(p, env={"SWITCHBOARD_LINE_PORT": "7001", "SWITCHBOARD_LOG_LEVEL": "debug"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    r = _check(p, env={"SWITCHBOARD_LOG_LEVEL": "loud"}, cwd=tmp_path)
    assert r.returncode == 1 and "log.level" in r.stderr, r.stderr


def test_env_override_changes_the_port(make_server):
    s = make_server(start=False)
    port = swb.free_port()
    s.env["SWITCHBOARD_LINE_PORT"] = str(port)
    s.port = port
    s.start()
    c = s.client("alice")
    c.ping()


def test_serve_refuses_an_invalid_config(make_server):
    s = make_server(start=False, users={}, log={"level": "loud"})
    s.start(wait=False)
    rc = s.proc.wait(timeout=30)
    assert rc != 0
    assert "log.level" in s.log_text()


# ---------------------------------------------------------------------------------- users


def test_user_management(server):
    r = server.cli("user", "list")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["alice", "bob", "carol"]

    r = server.cli("user", "add", "dave", "--password-stdin", input="first pw\nignored second line\n")
    assert r.returncode == 0, r.stderr
    assert "dave" in server.cli("user", "list").stdout.splitlines()
    # The password is the whole first line (spaces included), usable at once by the running server.
    d = server.client()
    assert d.cmd("AUTH dave first pw") == "OK AUTH dave"

    # passwd: the old password fails, the new one works.
    r = server.cli("user", "passwd", "dave", "--password-stdin", input="second-pw\n")
    assert r.returncode == 0, r.stderr
    x = server.client()
    expect_err(x.cmd("AUTH dave first pw"), "auth_failed")
    assert x.cmd("AUTH dave second-pw") == "OK AUTH dave"

    # del
    r = server.cli("user", "del", "dave")
    assert r.returncode == 0, r.stderr
    assert "dave" not in server.cli("user", "list").stdout.split()
    y = server.client()
    expect_err(y.cmd("AUTH dave second-pw"), "auth_failed")


def test_user_errors(server):
    r = server.cli("user", "add", "alice", "--password-stdin", input="x\n")
    assert r.returncode != 0 and r.stderr.strip(), "adding an existing user must fail"
    # alice's password is unchanged
    server.client("alice")

    for bad in ("has.dot", "spa ce", "x" * 33, "bang!"):
        r = server.cli("user", "add", bad, "--password-stdin", input="pw\n")
        assert r.returncode != 0 and r.stderr.strip(), f"user add {bad!r} must fail"
    assert sorted(server.cli("user", "list").stdout.split()) == ["alice", "bob", "carol"]

    r = server.cli("user", "del", "nobody")
    assert r.returncode != 0 and r.stderr.strip()
    r = server.cli("user", "passwd", "nobody", "--password-stdin", input="pw\n")
    assert r.returncode != 0 and r.stderr.strip()


def test_user_names_are_lower_cased(make_server):
    s = make_server(start=False, users={})
    r = s.cli("user", "add", "Eve", "--password-stdin", input="eve-pw\n")
    assert r.returncode == 0, r.stderr
    assert s.cli("user", "list").stdout.split() == ["eve"]
    s.start()
    e = s.client()
    assert e.cmd("AUTH EVE eve-pw") == "OK AUTH eve"


# ---------------------------------------------------------------------------------- rooms


def test_room_management(make_server):
    s = make_server(start=False, users={})
    for room in ("news", "alpha", "dev.ops"):
        r = s.cli("room", "create", room)
        assert r.returncode == 0, r.stderr
    r = s.cli("room", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["alpha", "dev.ops", "news"]

    r = s.cli("room", "delete", "news")
    assert r.returncode == 0, r.stderr
    assert s.cli("room", "list").stdout.split() == ["alpha", "dev.ops"]

    r = s.cli("room", "delete", "news")
    assert r.returncode != 0 and r.stderr.strip(), "deleting a missing room must fail"
    for bad in ("bad room", "bang!", "r" * 65):
        r = s.cli("room", "create", bad)
        assert r.returncode != 0 and r.stderr.strip(), f"room create {bad!r} must fail"
    assert s.cli("room", "list").stdout.split() == ["alpha", "dev.ops"]


def test_rooms_created_by_cli_are_listed_by_the_server(server):
    r = server.cli("room", "create", "announcements")
    assert r.returncode == 0, r.stderr
    a = server.client("alice")
    assert "announcements" in a.cmd("ROOMS").split()[2:]


# ---------------------------------------------------------------------------------- misc


def test_version(binary):
    r = swb.run_cli(["version"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"\d+\.\d+", r.stdout), r.stdout


@pytest.mark.parametrize("args", [
    ["--help"], ["serve", "--help"], ["user", "--help"], ["user", "add", "--help"],
    ["room", "--help"], ["check-config", "--help"],
])
def test_help(binary, args):
    r = swb.run_cli(args)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower(), r.stdout


def test_unknown_subcommand_fails(binary):
    r = swb.run_cli(["frobnicate"])
    assert r.returncode != 0 and r.stderr.strip()

"""Fixtures: a real `switchboard serve` per test, on a temp data dir and free ports.

    make_server(line={...}, limits={...}, env={...}, users=..., start=True) -> Server
    server                      -> a started Server; per-test overrides with
                                   @pytest.mark.server_config(line={"idle_timeout_seconds": 2})

A Server has .port, .config_path, .data_dir, .proc, .cli(*args, input=None), .restart(),
.kill9(), .stop(), .client(user) -> LineClient. Its output goes to serve-N.log in the test's
tmp dir and is printed when the test fails.

XMPP (tests/test_xmpp.py): the listener is off unless a test turns it on with
make_server(xmpp={"enabled": True}); it always gets a free port, `server.xmpp_port`
(xmpp_helpers.XMPPClient wraps slixmpp, xmpp_helpers.RawXMPP is a raw socket).

MQTT (tests/test_mqtt.py): the bridge is off unless a test turns it on.

    make_broker(acl=False, persistence=True) -> a started mqtt_helpers.Broker (own mosquitto,
                                   free port, temp config/persistence dir; stop/kill/restart)
    broker                      -> make_broker()
    make_server(mqtt={"enabled": True, "port": broker.port, ...})
                                -> a gateway bridging that broker
Broker logs are printed when the test fails, like the server's.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import swb  # noqa: E402


def pytest_report_header(config):
    return f"switchboard binary: {swb.BINARY}"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def binary():
    if not (swb.BINARY.is_file() and os.access(swb.BINARY, os.X_OK)):
        pytest.fail(f"switchboard binary not found at {swb.BINARY} "
                    f"(build it with `swift build` or set SWITCHBOARD_BIN)", pytrace=False)
    return swb.BINARY


@pytest.fixture
def make_server(binary, tmp_path, request):
    servers: list[swb.Server] = []

    def make(users: dict | None = None, env: dict | None = None, start: bool = True,
             **sections) -> swb.Server:
        d = tmp_path / f"server{len(servers) + 1}"
        d.mkdir()
        s = swb.Server(d, overrides=sections, env=env)
        servers.append(s)
        for name, pw in (swb.USERS if users is None else users).items():
            s.add_user(name, pw)
        if start:
            s.start()
        return s

    yield make

    failed = any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
                 for w in ("setup", "call"))
    for s in servers:
        s.teardown()
        if failed:
            print(f"\n===== switchboard output ({s.tmp}) =====\n{s.log_text()}")


def _failed(request) -> bool:
    return any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
               for w in ("setup", "call"))


@pytest.fixture
def make_broker(tmp_path, request):
    """Starts a private Mosquitto per call (imports paho/mosquitto only for the tests that ask)."""
    import mqtt_helpers

    brokers: list = []

    def make(acl: bool = False, persistence: bool = True, start: bool = True):
        b = mqtt_helpers.Broker(tmp_path / f"broker{len(brokers) + 1}", acl=acl, persistence=persistence)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    failed = _failed(request)
    for b in brokers:
        b.teardown()
        if failed:
            print(f"\n===== mosquitto output ({b.tmp}) =====\n{b.log_text()}")


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def server(make_server, request):
    marker = request.node.get_closest_marker("server_config")
    overrides = dict(marker.kwargs) if marker else {}
    return make_server(**overrides)

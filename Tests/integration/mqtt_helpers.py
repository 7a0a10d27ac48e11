"""MQTT helpers for the integration tests: a real Mosquitto broker per test and paho-mqtt clients.

    broker = Broker(tmp_path / "broker", acl=False)   # its own port, config, persistence dir, log
    broker.start(); broker.stop(); broker.kill(); broker.restart()   # restart: same port
    dev = MQTTClient(broker.port, "sensor-1")          # paho-mqtt (callback API v2), loop thread
    dev.connect(); dev.publish_wait(topic, "hello")    # -> the broker's PUBACK reason code
    sub = MQTTClient(broker.port, "watcher", persistent=True); sub.connect()
    sub.subscribe("switchboard/rooms/+/out"); sub.expect(lambda m: ..., timeout=10)

No mock anywhere: `mosquitto` is the Debian broker (`make test-deps` installs it), the clients
are paho-mqtt and the `mosquitto_pub` / `mosquitto_sub` command-line tools. Every blocking call
has a timeout so a test can fail but never hang.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from swb import READ_TIMEOUT, REPO, free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
ACL_EXAMPLE = REPO / "conf" / "mosquitto-acl.example"
PASSWD_EXAMPLE = REPO / "conf" / "mosquitto-passwd.example"
#: The plain passwords of conf/mosquitto-passwd.example (documented there and in protocols/mqtt.md).
EXAMPLE_PASSWORDS = {"switchboard": "switchboard-example-pw", "sensor-1": "sensor-1-example-pw",
                     "sensor-2": "sensor-2-example-pw"}
BROKER_START_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# The broker


class Broker:
    """One `mosquitto` on 127.0.0.1 and a free port, with its own config, persistence folder and
    log in `tmp`. Persistence is on (saved when the broker stops), so persistent sessions and their
    queued QoS 1 messages survive `restart()`. `acl=True` uses conf/mosquitto-acl.example and
    conf/mosquitto-passwd.example with `allow_anonymous false`."""

    def __init__(self, tmp: Path, acl: bool = False, persistence: bool = True, port: int | None = None):
        if not os.access(MOSQUITTO, os.X_OK):
            raise AssertionError(f"mosquitto not found ({MOSQUITTO}): `make test-deps` installs it")
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.acl = acl
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.logs: list[Path] = []
        self._log = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would drop to user `mosquitto`, which cannot write this temp dir.
            lines.append("user root")
        if persistence:
            persist = self.tmp / "persist"
            persist.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {persist}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        if acl:
            passwd = self.tmp / "passwd"
            shutil.copyfile(PASSWD_EXAMPLE, passwd)
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}", f"acl_file {ACL_EXAMPLE}"]
        else:
            lines.append("allow_anonymous true")
        self.config_path = self.tmp / "mosquitto.conf"
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = BROKER_START_TIMEOUT) -> "Broker":
        assert not self.running(), "broker already running"
        self.starts += 1
        log = self.tmp / f"mosquitto-{self.starts}.log"
        self.logs.append(log)
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                # Right after a stop the port may still be held for a moment: try again.
                if "Address already in use" in self.log_text(2000) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    self._close_log()
                    self._log = open(log, "ab")
                    self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                                 stdout=self._log, stderr=subprocess.STDOUT)
                    continue
                raise AssertionError(f"mosquitto exited with {rc} at start:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto not accepting on {self.port} after {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the broker saves its persistence file) and wait."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise AssertionError(f"mosquitto did not exit {timeout}s after SIGTERM")
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: nothing saved since the last save."""
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close_log()

    def restart(self) -> "Broker":
        self.stop()
        return self.start()

    def teardown(self) -> None:
        try:
            self.kill()
        except Exception:  # noqa: BLE001
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self, limit: int = 20000) -> str:
        parts = []
        for log in self.logs:
            try:
                text = log.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            if len(text) > limit:
                text = "...\n" + text[-limit:]
            parts.append(f"----- {log.name} -----\n{text}")
        return "\n".join(parts)

    # the command-line clients ------------------------------------------------------------------

    def pub(self, topic: str, message: bytes | str, qos: int = 1, user: str | None = None,
            password: str | None = None, extra: tuple = (), timeout: float = 10.0) -> subprocess.CompletedProcess:
        """`mosquitto_pub` one message (payload from stdin, so any bytes go)."""
        data = message.encode() if isinstance(message, str) else message
        args = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-t", topic, "-q", str(qos), "-s"]
        if user is not None:
            args += ["-u", user, "-P", password if password is not None else EXAMPLE_PASSWORDS[user]]
        return subprocess.run(args + list(extra), input=data, capture_output=True, timeout=timeout)

    def sub_process(self, topic: str, count: int, timeout_s: int = 15, extra: tuple = ()) -> subprocess.Popen:
        """A running `mosquitto_sub -v -C count -W timeout_s` (exits by itself at the latest after timeout_s)."""
        args = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(self.port), "-t", topic, "-q", "1", "-v",
                "-C", str(count), "-W", str(timeout_s), *extra]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# --------------------------------------------------------------------------------------------
# paho-mqtt clients


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    def json(self) -> dict:
        return json.loads(self.payload)


class MQTTClient:
    """A paho-mqtt client (callback API v2) on its own network thread, with timed waits.

    persistent=True: MQTT 3.1.1 with clean_session False, so the broker keeps the subscriptions
    and queues QoS 1 messages while the client is away, and paho resends its own unacknowledged
    QoS 1 publishes after a reconnect. Otherwise MQTT 5 (PUBACK reason codes visible)."""

    def __init__(self, port: int, client_id: str, *, persistent: bool = False, username: str | None = None,
                 password: str | None = None, protocol: int | None = None,
                 will: tuple[str, str] | None = None):
        self.port = port
        self.client_id = client_id
        self.protocol = protocol or (mqtt.MQTTv311 if persistent else mqtt.MQTTv5)
        kw = {}
        if self.protocol != mqtt.MQTTv5:
            kw["clean_session"] = not persistent
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=self.protocol, **kw)
        # Plenty of room so that a stream never waits on paho's own limits.
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        if username is not None:
            self.client.username_pw_set(username, password if password is not None else EXAMPLE_PASSWORDS.get(username))
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.messages: "queue.Queue[Message]" = queue.Queue()
        self.backlog: list[Message] = []
        self.received: list[Message] = []         # everything, for failure messages
        self.connects = 0
        self.disconnects = 0
        self.session_present: list[bool] = []
        self.connected = threading.Event()
        self._cond = threading.Condition()
        self._pubacks: dict[int, object] = {}     # mid -> reason code
        self._subacks: dict[int, list] = {}
        self._subscriptions: list[tuple[str, int]] = []
        self._mids: list[int] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    # callbacks (paho's thread) -----------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        with self._cond:
            self.connects += 1
            self.session_present.append(bool(flags.session_present))
            self.connected.set()
            self._cond.notify_all()
        if not flags.session_present:
            # A fresh session has no subscriptions: make them again (a persistent session has them).
            for topic, qos in self._subscriptions:
                client.subscribe(topic, qos)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self.disconnects += 1
            self.connected.clear()
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg):
        m = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup))
        self.received.append(m)
        self.messages.put(m)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self._pubacks[mid] = reason_code
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    # connection --------------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0, wait: bool = True) -> "MQTTClient":
        self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if wait:
            self.wait_connected(timeout)
        return self

    def wait_connected(self, timeout: float = 10.0, count: int | None = None) -> None:
        """Until connected (and, with `count`, until the count-th successful CONNACK)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.connected.is_set() and (count is None or self.connects >= count)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.client_id}: not connected to the broker on {self.port} "
                                         f"after {timeout}s (connects={self.connects})")
                self._cond.wait(remaining)

    def close(self) -> None:
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.client.loop_stop()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # operations --------------------------------------------------------------------------------

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        """SUBSCRIBE and wait for the SUBACK (granted QoS checked)."""
        self._subscriptions.append((topic, qos))
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"{self.client_id}: subscribe {topic}: rc={rc}"
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._subacks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.client_id}: no SUBACK for {topic} in {timeout}s")
                self._cond.wait(remaining)
            codes = self._subacks[mid]
        assert codes and not codes[0].is_failure, f"{self.client_id}: subscribe {topic} refused: {codes}"

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish without waiting (queued by paho while disconnected)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), f"{self.client_id}: publish {topic}: rc={info.rc}"
        return info

    def publish_ordered(self, topic: str, payload: bytes | str, qos: int = 1, timeout: float = 30.0) -> int:
        """Publish without waiting for the PUBACK, but keep the stream in order across reconnects.

        paho resends its unacknowledged QoS 1 messages only after `on_connect` has returned, and a
        publish made in that gap goes out first (the device itself would reorder its stream). So,
        after a disconnect, wait until reconnected and every earlier message is acknowledged."""
        if not self.connected.is_set():
            self.wait_connected(timeout)
            for mid in list(self._mids):
                self.wait_puback(mid, timeout)
        info = self.publish(topic, payload, qos=qos)
        self._mids.append(info.mid)
        return info.mid

    def publish_wait(self, topic: str, payload: bytes | str, qos: int = 1, timeout: float = 10.0):
        """Publish at QoS 1 and wait for the PUBACK; returns its reason code (MQTT 5: 0 or a refusal)."""
        info = self.publish(topic, payload, qos=qos)
        return self.wait_puback(info.mid, timeout)

    def wait_puback(self, mid: int, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._pubacks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.client_id}: no PUBACK for mid {mid} in {timeout}s")
                self._cond.wait(remaining)
            return self._pubacks[mid]

    def acked(self, mid: int) -> bool:
        with self._cond:
            return mid in self._pubacks

    # receiving ---------------------------------------------------------------------------------

    def next(self, timeout: float | None = None) -> Message:
        if self.backlog:
            return self.backlog.pop(0)
        try:
            return self.messages.get(timeout=READ_TIMEOUT if timeout is None else timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message in time; last={self._describe()}") from None

    def expect(self, wanted, timeout: float | None = None, what: str = "a message") -> Message:
        """The first message (backlog first) for which `wanted(msg)` holds; others stay buffered."""
        for i, m in enumerate(self.backlog):
            if wanted(m):
                del self.backlog[i]
                return m
        deadline = time.monotonic() + (READ_TIMEOUT if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.client_id}: timed out waiting for {what}; last={self._describe()}")
            try:
                m = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if wanted(m):
                return m
            self.backlog.append(m)

    def drain(self, wait: float = 0.5) -> list[Message]:
        out = list(self.backlog)
        self.backlog.clear()
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                return out

    def _describe(self) -> str:
        return repr([(m.topic, m.payload[:120]) for m in self.received[-10:]])


# --------------------------------------------------------------------------------------------
# The gateway's HTTP side


def http_get(server, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(server.http_url + path, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def healthz(server) -> dict:
    _, body = http_get(server, "/healthz")
    return json.loads(body)


def wait_bridge_up(server, timeout: float = 20.0) -> dict:
    """Until /healthz reports the mqtt listener up (connected to the broker)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = healthz(server)
            if (last.get("listeners") or {}).get("mqtt") == "up":
                return last
        except (OSError, ValueError) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            raise AssertionError(f"the MQTT bridge did not come up in {timeout}s: /healthz={last}")
        time.sleep(0.1)


def metrics(server) -> dict[tuple[str, frozenset], float]:
    """/metrics parsed: {(name, frozenset of (label, value)): value}."""
    status, body = http_get(server, "/metrics")
    assert status == 200, (status, body[:300])
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        if "{" in name_labels:
            name, _, rest = name_labels.partition("{")
            labels = []
            for part in _split_labels(rest.rstrip("}")):
                k, _, v = part.partition("=")
                labels.append((k.strip(), v.strip().strip('"')))
            key = (name, frozenset(labels))
        else:
            key = (name_labels, frozenset())
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def _split_labels(text: str) -> list[str]:
    parts, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def metric(server, name: str, **labels) -> float:
    """The sum of `name` over the series whose labels include `labels` (0 when absent)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics(server).items() if n == name and want <= set(ls))


def wait_metric(server, name: str, at_least: float, timeout: float = 10.0, **labels) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = metric(server, name, **labels)
        if value >= at_least:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} = {value}, expected >= {at_least} within {timeout}s")
        time.sleep(0.1)

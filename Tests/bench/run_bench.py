#!/usr/bin/env python3
"""Switchboard benchmarks: runs every benchmark and writes docs/BENCHMARKS.md.

    make bench
    # or, with binaries built elsewhere:
    python3 Tests/bench/run_bench.py --bin .build/release/switchboard \
        --bench-bin .build/release/switchboard-bench --out docs/BENCHMARKS.md

Python 3 standard library only. Every benchmark is bounded in time, all traffic goes to
127.0.0.1, every process started here is stopped again (also on Ctrl-C), and temp dirs
are removed.

1. In-process bus fan-out (`switchboard-bench fanout`): LocalBus over InMemoryHistoryStore
   (the bus alone) and over a real SQLiteStore.
2. History group commit (`switchboard-bench history raw|flood|paced`).
3. End to end on loopback (`switchboard-bench line`): the real `switchboard serve` (line
   protocol) and ngircd (IRC), the same load generator against both.
4. WebSocket (`switchboard-bench ws`, `ws-idle`): fan-out to 10,000 / 1,000 WebSocket clients (paced
   and saturated), server memory per idle authenticated connection, line <-> WebSocket latency.
5. MQTT bridge (`switchboard-bench mqtt direct|gateway`): a device publishing through a private
   Mosquitto to a subscriber (the broker alone) and through the gateway to a WebSocket client,
   side by side: added latency and sustained msgs/s.
6. XMPP MUC fan-out (`switchboard-bench xmpp`): the same room load (50 and 200 occupants, paced
   and saturated) against Switchboard, a private Prosody and a private ejabberd, one after the
   other: delivered stanzas/s, latency, server CPU per delivered stanza.
7. SIP (`Tests/bench/sip_bench.py`, sipp as the load): authenticated REGISTER and relayed MESSAGE at
   saturation and at 1,000/s against Switchboard and a private Kamailio: calls/s, response times,
   server CPU per transaction.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Targets (from the benchmark brief).
FANOUT_TARGET = 2_000_000          # envelope deliveries per second
HISTORY_TARGET = 200_000           # envelopes per second committed through the bus
PACED_P99_TARGET_MS = 5.0          # ack latency p99 at 10,000 envelopes/s
LINE_P99_TARGET_MS = 1.0           # end-to-end delivery latency p99, line protocol
WS_FANOUT_TARGET = 1_000_000       # WebSocket deliveries per second at saturation (10,000 clients)
WS_P99_TARGET_MS = 5.0             # WebSocket end-to-end latency p99 at 1,000 msg/s into 10,000 clients
WS_MEM_TARGET_KIB = 8.0            # server RSS per idle authenticated WebSocket connection
CROSS_P99_TARGET_MS = 5.0          # line <-> WebSocket latency p99 at 1,000 msg/s (same bound as WS)

# --------------------------------------------------------------------------------------------
# Processes and temp dirs: everything started here is stopped on exit.

_procs: list[subprocess.Popen] = []
_tmpdirs: list[Path] = []
_stoppers: list = []  # callables that stop what a Popen alone cannot (e.g. ejabberd's beam.smp and epmd)


def _cleanup() -> None:
    for stop in list(_stoppers):
        try:
            stop()
        except Exception:  # noqa: BLE001 -- best effort on the way out
            pass
    for p in list(_procs):
        stop_process(p, timeout=5)
    for d in list(_tmpdirs):
        shutil.rmtree(d, ignore_errors=True)
        _tmpdirs.remove(d)


def _on_signal(signum, _frame) -> None:
    log(f"signal {signum}: cleaning up")
    _cleanup()
    sys.exit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_tmpdir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"swb-{prefix}-"))
    _tmpdirs.append(d)
    return d


def remove_tmpdir(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
    if d in _tmpdirs:
        _tmpdirs.remove(d)


def start_process(args: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None,
                  user: str | None = None) -> subprocess.Popen:
    """Starts `args` with output to `log_path`; with `user` (when running as root) as that user and group."""
    f = open(log_path, "wb")
    drop = {"user": user, "group": user, "extra_groups": []} if user else {}
    try:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             env=env, cwd=str(cwd) if cwd else None, **drop)
    finally:
        f.close()
    _procs.append(p)
    return p


def stop_process(p: subprocess.Popen, timeout: float = 15) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
    try:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} did not stop after SIGTERM; killing it")
                p.kill()
                p.wait(timeout=10)
    except ProcessLookupError:
        pass
    if p in _procs:
        _procs.remove(p)
    return p.returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log_path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} not accepting after {timeout}s:\n{tail(log_path)}")
        time.sleep(0.1)


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run_json(args: list[str], timeout: float, env: dict | None = None) -> dict:
    """Runs a switchboard-bench subcommand; returns its JSON (or {"error": ...})."""
    log("$ " + " ".join(shlex.quote(a) for a in args))
    started = time.monotonic()
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", "ok": False}
    elapsed = time.monotonic() - started
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("{")]
    if r.returncode != 0 or not lines:
        err = (r.stderr or "").strip().splitlines()[-5:]
        return {"error": f"exit {r.returncode}: {' | '.join(err)}", "ok": False}
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        return {"error": f"bad JSON: {e}", "ok": False}
    data["wall_seconds"] = round(elapsed, 2)
    return data


def bench_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_ACCOUNTS_PBKDF2_ITERATIONS"] = "4096"
    return env


# --------------------------------------------------------------------------------------------
# Machine description


def sh(args: list[str]) -> str:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def machine_info(tmp_root: str) -> dict:
    info: dict[str, str] = {}
    info["nproc"] = sh(["nproc"])
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu"] = model
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                kb = int(line.split()[1])
                info["memory"] = f"{kb / 1024 / 1024:.1f} GiB"
    except OSError:
        info["memory"] = "unknown"
    info["kernel"] = f"{platform.system()} {platform.release()}"
    try:
        info["os"] = next(line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                          if line.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        info["os"] = "unknown"
    info["swift"] = sh(["swift", "--version"]).splitlines()[0] if shutil.which("swift") else "swift not on PATH"
    ng = shutil.which("ngircd") or ("/usr/sbin/ngircd" if Path("/usr/sbin/ngircd").exists() else None)
    info["ngircd"] = sh([ng, "--version"]).splitlines()[0] if ng else "not installed"
    info["sqlite"] = sh(["dpkg-query", "-W", "-f=${Version}", "libsqlite3-0"]) or "unknown"
    for pkg in ("prosody", "ejabberd"):
        v = sh(["dpkg-query", "-W", "-f=${Version}", pkg])
        info[pkg] = v if v and "no packages found" not in v else "not installed"
    try:
        info["loadavg"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        info["loadavg"] = "unknown"
    df = sh(["df", "-T", tmp_root]).splitlines()
    info["temp_fs"] = f"{tmp_root} on {df[-1].split()[1]}" if len(df) > 1 else tmp_root
    return info


class CpuAccounting:
    """How much CPU the machine spent during the benchmarks outside this script and its children
    (other users of a shared machine add noise), and how much the hypervisor stole."""

    def __init__(self) -> None:
        self.start_stat = self._stat()
        self.start_self = self._own()
        self.start_wall = time.monotonic()

    @staticmethod
    def _stat() -> list[int]:
        try:
            return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            return []

    @staticmethod
    def _own() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def report(self) -> dict:
        end = self._stat()
        wall = time.monotonic() - self.start_wall
        out = {"wall_seconds": round(wall, 1)}
        if not end or not self.start_stat:
            return out
        d = [b - a for a, b in zip(self.start_stat, end)]
        hz = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal ...
        busy = (d[0] + d[1] + d[2]) / hz  # user, nice, system (irq/softirq time is not charged to processes)
        steal = d[7] / hz if len(d) > 7 else 0.0
        own = self._own() - self.start_self
        cores = os.cpu_count() or 1
        out.update({
            "machine_busy_core_seconds": round(busy, 1),
            "own_core_seconds": round(own, 1),
            "foreign_core_seconds": round(max(0.0, busy - own), 1),
            "foreign_share": round(max(0.0, busy - own) / (wall * cores), 3) if wall > 0 else 0.0,
            "steal_share": round(steal / (wall * cores), 3) if wall > 0 else 0.0,
        })
        return out


def wait_until_quiet(max_seconds: float, threshold_cores: float = 0.25) -> str:
    """Waits (at most `max_seconds`) for a 3 s window in which other processes use less than
    `threshold_cores` of CPU; returns what happened, for the report."""
    if max_seconds <= 0:
        return "not checked"
    deadline = time.monotonic() + max_seconds
    while True:
        acc = CpuAccounting()
        time.sleep(3)
        used = acc.report().get("machine_busy_core_seconds", 0.0) / 3
        if used < threshold_cores:
            return f"quiet at the start ({used:.2f} cores busy)"
        if time.monotonic() > deadline:
            return f"still busy after waiting {max_seconds:.0f} s ({used:.2f} cores busy by others); ran anyway"
        log(f"machine busy ({used:.2f} cores used by other processes); waiting for a quiet moment")


def foreign_note(acc: dict) -> str:
    if "foreign_share" not in acc:
        return ""
    return (f"Other processes on the machine used {acc['foreign_share'] * 100:.0f} % of its CPU during this "
            f"section ({acc['foreign_core_seconds']} core-seconds in {acc['wall_seconds']} s); hypervisor steal "
            f"{acc['steal_share'] * 100:.1f} %.")


def append_footer(sec: list[str], raw: dict, acc: dict, commands_title: str) -> None:
    """What closes a protocol section: its commands, its notes and the machine-load note."""
    if raw.get("commands"):
        sec += [commands_title, "", "```sh", *raw["commands"], "```", ""]
    for note in raw.get("notes", []):
        sec += [f"**Note:** {note}", ""]
    if foreign_note(acc):
        sec += [foreign_note(acc), ""]


# --------------------------------------------------------------------------------------------
# 1. Fan-out


def bench_fanout(bench_bin: str, repeats: int, quick: bool) -> list[dict]:
    scenarios = [
        # (label, rooms, subscribers per room, messages per store)
        ("1 room x 1,000 subscribers", 1, 1000, {"memory": 10_000, "sqlite": 10_000}),
        ("1,000 rooms x 10 subscribers", 1000, 10, {"memory": 1_000_000, "sqlite": 500_000}),
    ]
    rows = []
    for label, rooms, subs, messages in scenarios:
        for store in ("memory", "sqlite"):
            n = messages[store] // (10 if quick else 1)
            runs = []
            for _ in range(repeats):
                runs.append(run_json([bench_bin, "fanout", "--store", store, "--rooms", str(rooms),
                                      "--subscribers", str(subs), "--messages", str(n),
                                      "--publishers", "1", "--consumers", "1", "--timeout", "120"], timeout=240))
            rows.append({"scenario": label, "store": store, "runs": runs})
    return rows


# --------------------------------------------------------------------------------------------
# 2. History


def bench_history(bench_bin: str, repeats: int, quick: bool) -> dict:
    out: dict[str, list[dict]] = {"raw": [], "flood": [], "flood_client_ids": [], "paced": []}
    for _ in range(repeats):
        out["raw"].append(run_json([bench_bin, "history", "raw", "--batches", "30" if quick else "300",
                                    "--batch-size", "1000"], timeout=180))
    for _ in range(repeats):
        out["flood"].append(run_json([bench_bin, "history", "flood", "--store", "sqlite", "--publishers", "4",
                                      "--messages", "100000" if quick else "1000000", "--timeout", "150"], timeout=240))
    # Informational: the same flood with a unique client_id on every envelope (clients that
    # send idempotency keys); one run, one publisher, bounded by the message count.
    out["flood_client_ids"] = [run_json([bench_bin, "history", "flood", "--store", "sqlite", "--publishers", "1",
                                         "--client-ids", "--messages", "5000" if quick else "50000",
                                         "--timeout", "150"], timeout=240)]
    for _ in range(repeats):
        out["paced"].append(run_json([bench_bin, "history", "paced", "--store", "sqlite", "--rate", "10000",
                                      "--seconds", "2" if quick else "5"], timeout=120))
    return out


# --------------------------------------------------------------------------------------------
# 3. End to end: switchboard (line) and ngircd (IRC)


CLIENTS = 100
RATE = 1000


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def write_switchboard_config(path: Path, data_dir: Path, port: int, ws_port: int | None = None,
                             mqtt: dict | None = None, xmpp_port: int | None = None) -> None:
    """Only `[line]` on `port`; with `ws_port` also `[websocket]` (sized for 20,000 connections);
    with `mqtt` also `[mqtt]` (these keys, `enabled = true`); with `xmpp_port` also `[xmpp]`
    (`XMPP_SERVER_SETTINGS`: plain SASL without TLS, no rate limit)."""
    sections = {
        "server": {"data_dir": str(data_dir)},
        "log": {"level": "warning"},
        "line": {"enabled": True, "bind": "127.0.0.1", "port": port,
                 "rate_per_second": 100000, "rate_burst": 100000},
        "websocket": {"enabled": False, "port": free_port()},
        "xmpp": {"enabled": False, "port": free_port()},
        "sip": {"enabled": False, "port": free_port()},
        "mqtt": {"enabled": False},
    }
    if ws_port is not None:
        sections["line"]["max_connections"] = 2000
        sections["websocket"] = dict(WS_SERVER_SETTINGS, enabled=True, bind="127.0.0.1", port=ws_port)
    if mqtt is not None:
        sections["mqtt"] = dict(mqtt, enabled=True)
    if xmpp_port is not None:
        sections["xmpp"] = dict(XMPP_SERVER_SETTINGS, enabled=True, bind="127.0.0.1", port=xmpp_port)
    text = []
    for section, keys in sections.items():
        text.append(f"[{section}]")
        text.extend(f"{k} = {toml_value(v)}" for k, v in keys.items())
        text.append("")
    path.write_text("\n".join(text))


class SwitchboardServer:
    def __init__(self, binary: str, password: str, websocket: bool = False, mqtt: dict | None = None,
                 xmpp: bool = False):
        self.binary = binary
        self.password = password
        self.dir = make_tmpdir("serve")
        self.port = free_port()
        self.ws_port = free_port() if websocket else None
        self.xmpp_port = free_port() if xmpp else None
        self.config = self.dir / "switchboard.toml"
        write_switchboard_config(self.config, self.dir / "data", self.port, self.ws_port, mqtt, self.xmpp_port)
        self.env = bench_env()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "serve.log"

    def add_users(self, names: list[str]) -> None:
        for name in names:
            r = subprocess.run([self.binary, "user", "add", name, "--password-stdin", "--config", str(self.config)],
                               input=self.password + "\n", capture_output=True, text=True, env=self.env,
                               cwd=str(self.dir), timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"user add {name} failed: {r.stderr.strip()}")

    def add_rooms(self, names: list[str]) -> None:
        for name in names:
            r = subprocess.run([self.binary, "room", "create", name, "--config", str(self.config)],
                               capture_output=True, text=True, env=self.env, cwd=str(self.dir), timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"room create {name} failed: {r.stderr.strip()}")

    def start(self) -> None:
        self.proc = start_process([self.binary, "serve", "--config", str(self.config)], self.log,
                                  env=self.env, cwd=self.dir)
        wait_port(self.port, self.proc, self.log)
        if self.ws_port is not None:
            wait_port(self.ws_port, self.proc, self.log)
        if self.xmpp_port is not None:
            wait_port(self.xmpp_port, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            rc = stop_process(self.proc)
            if rc not in (0, None):
                log(f"switchboard serve exited with {rc}:\n{tail(self.log, 1500)}")
            self.proc = None

    def dispose(self) -> None:
        self.stop()
        remove_tmpdir(self.dir)


class NgircdServer:
    def __init__(self, binary: str):
        self.binary = binary
        self.dir = make_tmpdir("ngircd")
        os.chmod(self.dir, 0o755)  # readable after ngircd drops root privileges
        include = self.dir / "conf.d"
        include.mkdir()
        self.port = free_port()
        self.config = self.dir / "ngircd.conf"
        as_root = os.geteuid() == 0
        lines = [
            "[Global]",
            "Name = bench.local",
            "Info = switchboard benchmark",
            "Listen = 127.0.0.1",
            f"Ports = {self.port}",
            "MotdPhrase = benchmark",
            "AdminInfo1 = benchmark",
            "AdminInfo2 = benchmark",
            "AdminEMail = bench@bench.local",
            *(["ServerUID = 65534", "ServerGID = 65534"] if as_root else []),
            "[Limits]",
            "MaxConnections = 0",
            "MaxConnectionsIP = 0",
            "MaxJoins = 0",
            "MaxPenaltyTime = 0",  # no penalty delays (flood throttling off)
            "MaxNickLength = 30",
            "PingTimeout = 600",
            "PongTimeout = 600",
            "[Options]",
            "PAM = no",
            "DNS = no",
            "Ident = no",
            f"IncludeDir = {include}",
            "",
        ]
        self.config.write_text("\n".join(lines))
        os.chmod(self.config, 0o644)
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "ngircd.log"

    def start(self) -> None:
        self.proc = start_process([self.binary, "-n", "-f", str(self.config)], self.log, cwd=self.dir)
        wait_port(self.port, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def dispose(self) -> None:
        self.stop()
        remove_tmpdir(self.dir)


def bench_line(binary: str, bench_bin: str, ngircd: str | None, repeats: int, quick: bool) -> dict:
    seconds = 3 if quick else 10
    password = "bench-password"
    names = [f"bench{i:03d}" for i in range(CLIENTS + 1)]
    results: dict[str, list[dict]] = {"line": [], "irc": []}
    notes: list[str] = []

    def load(port: int, proto: str) -> dict:
        args = [bench_bin, "line", "--host", "127.0.0.1", "--port", str(port), "--protocol", proto,
                "--clients", str(CLIENTS), "--rate", str(RATE), "--seconds", str(seconds),
                "--user-prefix", "bench", "--room", "bench"]
        if proto == "line":
            args += ["--password", password]
        return run_json(args, timeout=seconds * 3 + 120)

    for i in range(repeats):
        # Switchboard: a fresh data dir per run.
        server = SwitchboardServer(binary, password)
        try:
            log(f"switchboard: creating {len(names)} users")
            server.add_users(names)
            server.start()
            results["line"].append(load(server.port, "line"))
        except Exception as e:  # noqa: BLE001 -- reported in the document
            results["line"].append({"error": str(e), "ok": False})
        finally:
            server.dispose()

        if ngircd is None:
            if i == 0:
                notes.append("ngircd is not installed: no comparison.")
            continue
        irc = NgircdServer(ngircd)
        try:
            irc.start()
            res = load(irc.port, "irc")
            results["irc"].append(res)
        except Exception as e:  # noqa: BLE001
            results["irc"].append({"error": str(e), "ok": False})
        finally:
            irc.dispose()
    return {"seconds": seconds, "results": results, "notes": notes}


# --------------------------------------------------------------------------------------------
# 4. WebSocket: fan-out, memory per idle connection, line <-> WebSocket


WS_CLIENTS = 10_000
WS_SMALL_CLIENTS = 1_000
WS_USERS = 100                 # receivers log in as bench000…bench099 (several connections per user)
WS_RATE = 1000
WS_LOW_RATE = 10               # a rate 10,000 clients can be served at (for a latency figure below saturation)
WS_DRAIN_SECONDS = 30          # how long a run waits for deliveries after the last send
WS_IDLE_POINTS = (5_000, 15_000)
CROSS_RECEIVERS = 100

# The [websocket] section of the WebSocket benchmarks' server (the rest is the default).
WS_SERVER_SETTINGS = {
    "max_connections": 20000,
    "rate_per_second": 1_000_000,   # the saturating sender sends far more than 50 frames/s
    "rate_burst": 1_000_000,
    "idle_timeout_seconds": 3600,   # idle connections of the memory test send nothing
}


def proc_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_threads(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def settle_rss(pid: int, seconds: float = 3.0) -> int | None:
    """The server's VmRSS after `seconds` (the median of 5 readings over the last second)."""
    time.sleep(max(0.0, seconds - 1.0))
    readings = []
    for _ in range(5):
        v = proc_rss_kib(pid)
        if v is not None:
            readings.append(v)
        time.sleep(0.2)
    return int(statistics.median(readings)) if readings else None


def raise_nofile() -> str:
    """Raises this process's soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"{soft} (hard {hard})"


def ws_server(binary: str, password: str, names: list[str]) -> SwitchboardServer:
    server = SwitchboardServer(binary, password, websocket=True)
    log(f"switchboard (websocket): creating {len(names)} users")
    server.add_users(names)
    server.start()
    return server


def ws_load(server: SwitchboardServer, bench_bin: str, password: str, room: str, *, clients: int,
            receivers_via: str = "ws", sender_via: str = "ws", rate: int = WS_RATE, seconds: float = 10,
            saturate: bool = False, messages: int = 0, source_addresses: int = 4) -> dict:
    args = [bench_bin, "ws", "--host", "127.0.0.1", "--port", str(server.ws_port), "--line-port", str(server.port),
            "--clients", str(clients), "--users", str(WS_USERS), "--receivers-via", receivers_via,
            "--sender-via", sender_via, "--user-prefix", "bench", "--password", password, "--room", room,
            "--source-addresses", str(source_addresses), "--drain-timeout", str(WS_DRAIN_SECONDS)]
    if saturate:
        args += ["--saturate", "--messages", str(messages)]
        budget = messages / 50 + 300
    else:
        args += ["--rate", str(rate), "--seconds", str(seconds)]
        budget = seconds * 3 + 300
    cpu0 = proc_cpu_seconds(server.proc.pid) if server.proc else None
    rss0 = proc_rss_kib(server.proc.pid) if server.proc else None
    result = run_json(args, timeout=budget)
    cpu1 = proc_cpu_seconds(server.proc.pid) if server.proc else None
    if cpu0 is not None and cpu1 is not None:
        result["server_cpu_seconds_whole_run"] = round(cpu1 - cpu0, 2)  # includes connection setup
    result["server_rss_kib_before"] = rss0
    result["server_rss_kib_after"] = proc_rss_kib(server.proc.pid) if server.proc else None
    if server.proc is not None and server.proc.poll() is not None:
        result = {"error": f"server exited with {server.proc.returncode}: {tail(server.log, 800)}", "ok": False}
    else:
        # Let the server finish the backlog and close the sessions before the next run.
        result["server_busy_after_run_seconds"] = wait_proc_idle(server.proc.pid)
    return result


def wait_proc_idle(pid: int, max_seconds: float = 120, threshold_cores: float = 0.05) -> float:
    """Waits until `pid` uses less than `threshold_cores` over half a second; returns the seconds waited."""
    start = time.monotonic()
    prev = proc_cpu_seconds(pid)
    while time.monotonic() - start < max_seconds:
        time.sleep(0.5)
        cur = proc_cpu_seconds(pid)
        if prev is None or cur is None or (cur - prev) / 0.5 < threshold_cores:
            break
        prev = cur
    return round(time.monotonic() - start, 1)


def bench_ws(binary: str, bench_bin: str, repeats: int, quick: bool) -> dict:
    password = "bench-password"
    names = [f"bench{i:03d}" for i in range(max(WS_USERS, CROSS_RECEIVERS))] + ["benchsnd"]
    big = 2_000 if quick else WS_CLIENTS
    small = 200 if quick else WS_SMALL_CLIENTS
    paced_seconds = 2 if quick else 3
    low_seconds = 3 if quick else 10
    out: dict = {"fanout": {}, "idle": [], "cross": {}, "notes": [], "clients": big, "small_clients": small,
                 "paced_seconds": paced_seconds, "nofile": raise_nofile()}
    out["low_seconds"] = low_seconds
    # (label, clients, saturate, messages)
    fanout_points = [
        # (label, clients, saturate, messages, rate)
        ("paced_big", big, False, 0, WS_RATE),
        ("paced_big_low", big, False, 0, WS_LOW_RATE),
        ("saturate_big", big, True, 100 if quick else 300, 0),
        ("paced_small", small, False, 0, WS_RATE),
        ("saturate_small", small, True, 1000 if quick else 2000, 0),
    ]
    cross_seconds = 3 if quick else 10
    for run in range(repeats):
        server = None
        try:
            server = ws_server(binary, password, names)
            for label, clients, saturate, messages, rate in fanout_points:
                out["fanout"].setdefault(label, []).append(ws_load(
                    server, bench_bin, password, f"fan-{label.replace('_', '-')}-{run}", clients=clients, rate=rate,
                    seconds=paced_seconds if rate == WS_RATE else low_seconds, saturate=saturate, messages=messages))
            for label, receivers_via, sender_via in [("line_to_ws", "ws", "line"), ("ws_to_line", "line", "ws"),
                                                      ("ws_to_ws", "ws", "ws")]:
                out["cross"].setdefault(label, []).append(ws_load(
                    server, bench_bin, password, f"cross-{label.replace('_', '-')}-{run}", clients=CROSS_RECEIVERS,
                    receivers_via=receivers_via, sender_via=sender_via, seconds=cross_seconds, source_addresses=0))
        except Exception as e:  # noqa: BLE001 -- reported in the document
            out["notes"].append(f"run {run + 1}: {e}")
        finally:
            if server is not None:
                server.dispose()
    # Memory: one fresh server per run.
    for run in range(repeats):
        out["idle"].append(bench_ws_idle(binary, bench_bin, password, names, quick))
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    out["mosquitto"] = bench_mosquitto_idle(mosquitto, quick) if mosquitto else {"error": "mosquitto is not installed"}
    return out


def bench_ws_idle(binary: str, bench_bin: str, password: str, names: list[str], quick: bool) -> dict:
    """Server RSS at 0, 5,000 and 15,000 idle authenticated connections (auth + join of one room),
    opened by two `switchboard-bench ws-idle` processes (5,000 + 10,000) from separate 127.0.0.x ranges."""
    points = (500, 1500) if quick else WS_IDLE_POINTS
    result: dict = {"points": []}
    server = None
    holders: list[subprocess.Popen] = []
    try:
        server = ws_server(binary, password, names)
        pid = server.proc.pid
        result["rss0_kib"] = settle_rss(pid, 3)
        result["threads0"] = proc_threads(pid)
        opened = 0
        first_source = 2
        for n in points:
            add = n - opened
            args = [bench_bin, "ws-idle", "--host", "127.0.0.1", "--port", str(server.ws_port),
                    "--clients", str(add), "--users", str(WS_USERS), "--user-prefix", "bench", "--password", password,
                    "--room", "idle", "--source-addresses", "4", "--first-source", str(first_source), "--hold", "900"]
            first_source += 4
            log("$ " + " ".join(shlex.quote(a) for a in args))
            p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _procs.append(p)
            holders.append(p)
            line = p.stdout.readline()
            if not line.strip().startswith("{"):
                err = p.stderr.read() if p.poll() is not None else ""
                raise RuntimeError(f"ws-idle did not get ready: {line.strip()} {err.strip()[-500:]}")
            ready = json.loads(line)
            opened = n
            rss = settle_rss(pid, 4)
            result["points"].append({"connections": n, "rss_kib": rss, "threads": proc_threads(pid),
                                     "setup_seconds": ready.get("setup_seconds"),
                                     "client_rss_kib": ready.get("client_rss_kib")})
            log(f"{n} idle connections: server RSS {rss} KiB")
        # Close every holder; the server should give the memory back (reported, no target).
        done = []
        for p in holders:
            p.stdin.close()
            p.stdin = None  # so communicate() does not flush it
        for p in holders:
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
            done.append(json.loads(lines[-1]) if lines else {"ok": False, "error": err.strip()[-300:]})
            if p in _procs:
                _procs.remove(p)
        result["rss_after_close_kib"] = settle_rss(pid, 5)
        result["holders"] = done
        result["ok"] = all(d.get("ok") for d in done)
        base = result["rss0_kib"]
        for pt in result["points"]:
            if base is not None and pt["rss_kib"] is not None:
                pt["kib_per_connection"] = round((pt["rss_kib"] - base) / pt["connections"], 2)
    except Exception as e:  # noqa: BLE001
        result = {"error": str(e), "ok": False, **result}
    finally:
        for p in holders:
            if p.poll() is None:
                stop_process(p, timeout=10)
        if server is not None:
            server.dispose()
    return result


def mqtt_idle_clients(port: int, count: int, source_addresses: int = 4) -> list[socket.socket]:
    """`count` MQTT 3.1.1 clients (clean session, keepalive 0) subscribed to `bench/idle` at QoS 0."""
    socks = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.0.{2 + i % source_addresses}", 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        cid = f"idle{i:06d}".encode()
        var = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
        s.sendall(bytes([0x10, len(var)]) + var)
        if s.recv(4)[:1] != b"\x20":
            raise RuntimeError(f"mosquitto: no CONNACK for client {i}")
        topic = b"bench/idle"
        sub = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x00"
        s.sendall(bytes([0x82, len(sub)]) + sub)
        if s.recv(5)[:1] != b"\x90":
            raise RuntimeError(f"mosquitto: no SUBACK for client {i}")
        socks.append(s)
    return socks


def bench_mosquitto_idle(mosquitto: str, quick: bool) -> dict:
    """Mosquitto's RSS at 0, 5,000 and 15,000 idle subscribed MQTT clients (for comparison)."""
    points = (500, 1500) if quick else WS_IDLE_POINTS
    d = make_tmpdir("mosquitto")
    os.chmod(d, 0o755)
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
                    "max_connections -1\n")
    os.chmod(conf, 0o644)
    log_path = d / "mosquitto.log"
    proc = None
    socks: list[socket.socket] = []
    result: dict = {"points": [], "version": sh([mosquitto, "-h"]).splitlines()[0] if mosquitto else "?"}
    try:
        proc = start_process([mosquitto, "-c", str(conf)], log_path, cwd=d)
        wait_port(port, proc, log_path)
        result["rss0_kib"] = settle_rss(proc.pid, 2)
        for n in points:
            socks += mqtt_idle_clients(port, n - len(socks))
            rss = settle_rss(proc.pid, 3)
            result["points"].append({"connections": n, "rss_kib": rss,
                                     "kib_per_connection": round((rss - result["rss0_kib"]) / n, 2)})
            log(f"mosquitto, {n} idle MQTT clients: RSS {rss} KiB")
        result["ok"] = True
    except Exception as e:  # noqa: BLE001
        result.update({"error": str(e), "ok": False})
    finally:
        for s in socks:
            s.close()
        if proc is not None:
            stop_process(proc)
        remove_tmpdir(d)
    return result


# --------------------------------------------------------------------------------------------
# 5. MQTT bridge: device -> broker -> gateway -> WebSocket, against the broker alone


MQTT_RATE = 1000                   # paced publishes per second (latency)
MQTT_ADDED_P50_TARGET_MS = 0.3     # gateway − direct latency at p50
MQTT_RATE_RATIO_TARGET = 1.0       # the bridge sustains at least the broker's own single-topic rate
MQTT_WINDOW = 100                  # saturation: publishes not yet PUBACKed
MQTT_DELIVERY_WINDOW = 1000        # saturation: published but not yet received by the measured receiver
MQTT_BROKER_CONF = ["allow_anonymous true", "set_tcp_nodelay true", "persistence false", "log_dest none",
                    "max_inflight_messages 1000", "max_queued_messages 100000", "max_connections -1"]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def bench_mqtt(binary: str, bench_bin: str, repeats: int, quick: bool) -> dict:
    """A private Mosquitto and a switchboard bridged to it; `switchboard-bench mqtt direct` and
    `mqtt gateway` side by side in every repeat (paced latency, then saturation; QoS 1 and QoS 0)."""
    seconds = 2 if quick else 5
    messages = 5000 if quick else 30000
    out: dict = {"runs": {}, "notes": [], "seconds": seconds, "messages": messages, "commands": []}
    mosquitto = mosquitto_binary()
    if not mosquitto:
        out["notes"].append("mosquitto is not installed: section not run")
        return out
    out["mosquitto"] = sh([mosquitto, "-h"]).splitlines()[0]
    d = make_tmpdir("mqtt-broker")
    os.chmod(d, 0o755)
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text("\n".join([f"listener {port} 127.0.0.1", *MQTT_BROKER_CONF, ""]))
    os.chmod(conf, 0o644)
    out["broker_conf"] = MQTT_BROKER_CONF
    broker_log = d / "mosquitto.log"
    broker = None
    server = None
    password = "bench-password"
    try:
        broker = start_process([mosquitto, "-c", str(conf)], broker_log, cwd=d)
        wait_port(port, broker, broker_log)
        server = SwitchboardServer(binary, password, websocket=True,
                                   mqtt={"host": "127.0.0.1", "port": port, "client_id": "switchboard-bench"})
        server.add_users(["bench000"])
        server.start()
        # The bridge connects asynchronously: give it a moment (its CONNACK, subscription, `online`).
        time.sleep(1.5)
        common = [bench_bin, "mqtt"]
        for run in range(repeats):
            for qos in (1, 0):
                for kind in ("paced", "saturate"):
                    load = ["--rate", str(MQTT_RATE), "--seconds", str(seconds)] if kind == "paced" else \
                        ["--saturate", "--messages", str(messages), "--window", str(MQTT_WINDOW),
                         "--delivery-window", str(MQTT_DELIVERY_WINDOW)]
                    budget = seconds * 3 + 60 if kind == "paced" else messages / 200 + 120
                    for mode in ("direct", "gateway"):
                        args = common + [mode, "--mqtt-port", str(port), "--qos", str(qos), *load]
                        if mode == "direct":
                            args += ["--topic", f"bench/direct-{run}"]
                        else:
                            args += ["--ws-port", str(server.ws_port), "--user", "bench000", "--password", password,
                                     "--room", f"mqtt-{kind}-q{qos}-{run}", "--out-subscriber"]
                        if run == 0:
                            out["commands"].append(" ".join(shlex.quote(a) for a in [
                                "switchboard-bench", *args[1:]]).replace(str(port), "<broker-port>")
                                .replace(str(server.ws_port), "<ws-port>").replace(password, "<pw>"))
                        cpu0 = proc_cpu_seconds(server.proc.pid)
                        bcpu0 = proc_cpu_seconds(broker.pid)
                        r = run_json(args, timeout=budget)
                        cpu1 = proc_cpu_seconds(server.proc.pid)
                        bcpu1 = proc_cpu_seconds(broker.pid)
                        if None not in (cpu0, cpu1):
                            r["server_cpu_seconds"] = round(cpu1 - cpu0, 2)
                        if None not in (bcpu0, bcpu1):
                            r["broker_cpu_seconds"] = round(bcpu1 - bcpu0, 2)
                        if server.proc.poll() is not None:
                            r = {"error": f"server exited with {server.proc.returncode}: {tail(server.log, 800)}", "ok": False}
                        elif broker.poll() is not None:
                            r = {"error": f"mosquitto exited with {broker.returncode}: {tail(broker_log, 800)}", "ok": False}
                        else:
                            r["server_busy_after_run_seconds"] = wait_proc_idle(server.proc.pid)
                        out["runs"].setdefault(f"{mode}_{kind}_q{qos}", []).append(r)
    except Exception as e:  # noqa: BLE001 -- reported in the document
        out["notes"].append(f"{e}")
    finally:
        if server is not None:
            server.dispose()
        if broker is not None:
            stop_process(broker)
        remove_tmpdir(d)
    return out


def render_mqtt(mq: dict, sections: dict, summary: list) -> list[str]:
    sec: list[str] = []
    sec.append("## 5. MQTT bridge: device → broker → gateway → WebSocket, against the broker alone")
    sec.append("")
    runs = mq.get("runs", {}) if mq else {}
    if not runs:
        sec.append("Not run." + (" " + "; ".join(mq.get("notes", [])) if mq and mq.get("notes") else ""))
        sec.append("")
        return sec
    secs, msgs = mq.get("seconds"), mq.get("messages")
    sec.append(f"A private **Mosquitto** ({mq.get('mosquitto', '?')}) on a free loopback port with a temp config "
               "(`" + "`, `".join(mq.get("broker_conf", MQTT_BROKER_CONF)) + "`) and the release `switchboard serve` with "
               "`[mqtt] enabled = true` bridged to it (defaults otherwise: prefix `switchboard`, `qos` 1 on `/out`, "
               "`dedup_seconds` 30, MQTT 5), `[websocket]` and `[line]` on free ports, a fresh data dir, user `bench000`. "
               "One broker and one server for the whole section; every repeat runs both modes back to back, "
               "so the two columns are measured side by side in one run:")
    sec.append("")
    sec.append("* **direct** (`switchboard-bench mqtt direct`): a device client publishes to `bench/direct-<n>`; a "
               "subscriber on that topic (same QoS) in the same process receives it. The broker alone.")
    sec.append("* **gateway** (`switchboard-bench mqtt gateway`): the same device client publishes to "
               "`switchboard/rooms/<room>/in/sensor-1`; the gateway (subscribed to `switchboard/rooms/+/in/+` at QoS 1) "
               "submits a chat envelope to the bus (SQLite commit first, as always) and a WebSocket client "
               "(`bench000`, bearer token via `POST /api/v1/token`, `auth`, `join`) receives the envelope. Also measured: an "
               "MQTT subscriber on `switchboard/rooms/<room>/out` (the gateway publishes every envelope back to the broker).")
    sec.append("")
    sec.append(f"The bench's MQTT clients are libmosquitto 2.0 (threaded, `mosquitto_loop_start`, TCP_NODELAY, MQTT 5 "
               "with libmosquitto's default Receive Maximum of 20, as the gateway). Payloads are 64 bytes of plain text that "
               "start with the CLOCK_MONOTONIC publish time and the index; latency = receive − publish in one process. "
               f"**paced**: {MQTT_RATE:,} msg/s for {secs} s. **saturation**: {fmt_int(msgs)} messages as fast as at most "
               f"{MQTT_WINDOW} publishes without PUBACK and {fmt_int(MQTT_DELIVERY_WINDOW)} messages not yet received by the "
               "measured receiver allow; msgs/s = received / (last receive − first publish). "
               "Added latency = gateway − direct (medians of the repeats); rate ratio = gateway / direct.")
    sec.append("")

    def rs(key):
        return good(runs.get(key, []))

    def lat(r_, key):
        return [r["latency"][key] for r in r_ if r.get("latency", {}).get("count")]

    sec.append("| QoS | run | receiver | latency p50 | p90 | p99 | max | received msgs/s | lost | server CPU (s) | broker CPU (s) | verification |")
    sec.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for qos in (1, 0):
        for kind in ("paced", "saturate"):
            for mode in ("direct", "gateway"):
                key = f"{mode}_{kind}_q{qos}"
                r_ = rs(key)
                title = "paced " + f"{MQTT_RATE:,}/s" if kind == "paced" else "saturation"
                if not r_:
                    errs = [r.get("error", "?") for r in runs.get(key, [])]
                    sec.append(f"| {qos} | {title} | {mode} | not measured{': ' + errs[0][:200] if errs else ''} | | | | | | | | |")
                    continue
                rates = [r["received_per_s"] for r in r_]
                receiver = "MQTT subscriber" if mode == "direct" else "WebSocket (gateway)"
                sec.append(f"| {qos} | {title} | {receiver} | {fmt_ms(med(lat(r_, 'p50_us')))}{spread(lat(r_, 'p50_us'), fmt_ms)} | "
                           f"{fmt_ms(med(lat(r_, 'p90_us')))} | {fmt_ms(med(lat(r_, 'p99_us')))}{spread(lat(r_, 'p99_us'), fmt_ms)} | "
                           f"{fmt_ms(med(lat(r_, 'max_us')))} | {fmt_int(med(rates))}{spread(rates, fmt_int)} | "
                           f"{fmt_int(sum(r.get('lost', 0) for r in r_))} | "
                           f"{med([r.get('server_cpu_seconds', 0) for r in r_]) if mode == 'gateway' else '–'} | "
                           f"{med([r.get('broker_cpu_seconds', 0) for r in r_])} | {verification(runs.get(key, []))} |")
                if mode == "gateway":
                    outs = [r["out_subscriber"] for r in r_ if r.get("out_subscriber")]
                    if outs:
                        o_lat = lambda k: [o["latency"][k] for o in outs if o.get("latency", {}).get("count")]  # noqa: E731
                        o_rates = [o["received_per_s"] for o in outs]
                        sec.append(f"| {qos} | {title} | MQTT `…/out` (gateway) | {fmt_ms(med(o_lat('p50_us')))} | "
                                   f"{fmt_ms(med(o_lat('p90_us')))} | {fmt_ms(med(o_lat('p99_us')))} | {fmt_ms(med(o_lat('max_us')))} | "
                                   f"{fmt_int(med(o_rates))}{spread(o_rates, fmt_int)} | {fmt_int(sum(o.get('lost', 0) for o in outs))} | "
                                   "(same run) | (same run) | – |")
    sec.append("")
    sec.append("| metric (QoS 1 unless said) | direct (broker) | gateway | gateway − direct / ratio | target | met? |")
    sec.append("|---|---|---|---|---|---|")
    for qos in (1, 0):
        dp, gp = rs(f"direct_paced_q{qos}"), rs(f"gateway_paced_q{qos}")
        for pkey, label in (("p50_us", "p50"), ("p99_us", "p99")):
            dv, gv = med(lat(dp, pkey)), med(lat(gp, pkey))
            added = gv - dv if dv is not None and gv is not None else None
            target = f"≤ {MQTT_ADDED_P50_TARGET_MS:g} ms" if pkey == "p50_us" and qos == 1 else "–"
            ok = ("yes" if added is not None and added / 1000 <= MQTT_ADDED_P50_TARGET_MS else
                  ("**no (missed)**" if added is not None else "**not measured**")) if target != "–" else "–"
            sec.append(f"| added latency {label}, QoS {qos}, {MQTT_RATE:,} msg/s | {fmt_ms(dv)} | {fmt_ms(gv)} | "
                       f"{fmt_ms(added)} | {target} | {ok} |")
            if qos == 1:
                summary.append((f"MQTT bridge added latency {label} (device → WebSocket − device → subscriber, {MQTT_RATE:,} msg/s, QoS 1)",
                                f"{fmt_ms(added)} ({fmt_ms(gv)} vs {fmt_ms(dv)})", target, ok))
        ds, gs = rs(f"direct_saturate_q{qos}"), rs(f"gateway_saturate_q{qos}")
        dr, gr = med([r["received_per_s"] for r in ds]), med([r["received_per_s"] for r in gs])
        ratio = gr / dr if dr and gr is not None else None
        target = f"≥ {MQTT_RATE_RATIO_TARGET:g} × direct" if qos == 1 else "–"
        ok = (met(ratio, MQTT_RATE_RATIO_TARGET) if qos == 1 else "–")
        sec.append(f"| sustained msgs/s, QoS {qos} | {fmt_int(dr)} | {fmt_int(gr)} | "
                   f"{f'{ratio:.2f} ×' if ratio is not None else 'n/a'} | {target} | {ok} |")
        if qos == 1:
            summary.append(("MQTT bridge sustained msgs/s (gateway / broker's own single-topic rate, QoS 1)",
                            f"{fmt_int(gr)} vs {fmt_int(dr)} ({f'{ratio:.2f} ×' if ratio is not None else 'n/a'})",
                            target, ok))
    sec.append("")
    sec.append("*server CPU* / *broker CPU*: CPU seconds of `switchboard serve` / `mosquitto` over the whole bench "
               "process (setup and drain included). Everything shares the machine's cores: the bench's own libmosquitto "
               "threads, the broker, the gateway and the WebSocket client.")
    sec.append("")
    append_footer(sec, mq, sections.get("mqtt", {}), "Commands (first repeat; ports and password replaced):")
    return sec


# --------------------------------------------------------------------------------------------
# 6. XMPP MUC fan-out: Switchboard vs Prosody vs ejabberd


PEERS = Path(__file__).resolve().parent / "peers"   # config templates of the peer servers
XMPP_DOMAIN = "localhost"                          # MUC at conference.localhost on every server
XMPP_SIZES = (50, 200)                             # occupants of the room
XMPP_PACED_DELIVERIES = 2_000                      # paced: offered deliveries/s (1 sender at this / occupants msg/s)
XMPP_PACED_SECONDS = 6
XMPP_SATURATE_SECONDS = 4
XMPP_SATURATE_SENDERS = 2
XMPP_WINDOW = 64                                   # saturation: messages not yet delivered to every occupant
XMPP_DRAIN_SECONDS = 30
XMPP_CPU_RATIO_PROSODY = 0.1                       # target: Switchboard's CPU per delivery ≤ 1/10 of Prosody's …
XMPP_PEERS = ("prosody", "ejabberd")               # … below ejabberd's, and a lower p99 than both at every size

# The [xmpp] section of the XMPP benchmark's server (the rest is the default).
XMPP_SERVER_SETTINGS = {
    "allow_plain_without_tls": True,   # SASL PLAIN on a plain loopback stream, as the peers are set up
    "rate_per_second": 1_000_000,      # the saturating senders send far more than 50 stanzas/s
    "rate_burst": 1_000_000,
    "max_connections": 2000,
    "idle_timeout_seconds": 3600,
}


def proc_descendants(pid: int) -> list[int]:
    """Every descendant of `pid` (children of all its threads, recursively)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except (OSError, ValueError):
                continue
            for k in kids:
                if k not in out:
                    out.append(k)
                    stack.append(k)
    return out


def wait_pids_idle(pids: list[int], max_seconds: float = 30, threshold_cores: float = 0.05) -> float:
    """Waits until the processes together use less than `threshold_cores` over half a second."""
    start = time.monotonic()

    def total() -> float:
        return sum(proc_cpu_seconds(p) or 0.0 for p in pids)

    prev = total()
    while time.monotonic() - start < max_seconds:
        time.sleep(0.5)
        cur = total()
        if (cur - prev) / 0.5 < threshold_cores:
            break
        prev = cur
    return round(time.monotonic() - start, 1)


def package_version(name: str) -> str:
    v = sh(["dpkg-query", "-W", "-f=${Version}", name])
    return v if v and "no packages found" not in v and "unavailable" not in v else "not installed"


class ProsodyServer:
    """A private Prosody (Debian's `prosody`) from Tests/bench/peers/prosody.cfg.lua in a temp dir:
    loopback, a free port, plain SASL, no mod_limits, MUC on conference.<domain>; run as user
    `prosody` when this script runs as root (Prosody refuses to run as root)."""

    name = "prosody"

    def __init__(self, binary: str, domain: str = XMPP_DOMAIN):
        self.binary = binary
        self.domain = domain
        self.dir = make_tmpdir("prosody")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.config = self.dir / "prosody.cfg.lua"
        self.config.write_text(string.Template((PEERS / "prosody.cfg.lua").read_text()).substitute(
            dir=str(self.dir), port=self.port, domain=domain))
        (self.dir / "certs").mkdir()
        self.accounts = self.dir / "data" / self.encode(domain) / "accounts"
        self.accounts.mkdir(parents=True)
        self.user = "prosody" if os.geteuid() == 0 else None
        self.log = self.dir / "prosody.stdout.log"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def encode(s: str) -> str:
        """Prosody's datamanager path encoding (every non-alphanumeric byte as %xx)."""
        return "".join(c if c.isalnum() and c.isascii() else f"%{ord(c):02x}" for c in s)

    def add_users(self, names: list[str], password: str) -> None:
        """Accounts of `internal_plain` auth, written as Prosody stores them (data/<host>/accounts/<user>.dat)."""
        if not all(c.isalnum() or c in "-_." for c in password):
            raise ValueError("the benchmark password must be plain ASCII (it is written into Lua files)")
        for name in names:
            (self.accounts / f"{self.encode(name)}.dat").write_text(f'return {{\n\t["password"] = "{password}";\n}};\n')
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
            for root, dirs, files in os.walk(self.dir):
                for entry in dirs + files:
                    shutil.chown(os.path.join(root, entry), self.user, self.user)

    def version(self) -> str:
        return package_version("prosody")

    def start(self) -> None:
        self.proc = start_process([self.binary, "-F", "--config", str(self.config)], self.log, cwd=self.dir,
                                  user=self.user)
        wait_port(self.port, self.proc, self.log, timeout=30)

    def pids(self) -> list[int]:
        return [self.proc.pid, *proc_descendants(self.proc.pid)] if self.proc else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def dispose(self) -> None:
        self.stop()
        remove_tmpdir(self.dir)


class EjabberdServer:
    """A private ejabberd (Debian's `ejabberd`) from Tests/bench/peers/ejabberd.yml in a temp dir:
    `ejabberdctl … foreground` with its own ctl config, Mnesia spool, logs, Erlang node name and
    epmd port (loopback), run as user `ejabberd` when this script runs as root. Accounts come from
    one `ejabberdctl import_piefxis` (XEP-0227) instead of a `register` per user (~0.5 s each)."""

    name = "ejabberd"

    def __init__(self, ctl: str, domain: str = XMPP_DOMAIN):
        self.ctl = ctl
        self.domain = domain
        self.dir = make_tmpdir("ejabberd")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.epmd_port = free_port()
        (self.dir / "ejabberd.yml").write_text(string.Template((PEERS / "ejabberd.yml").read_text()).substitute(
            port=self.port, domain=domain))
        (self.dir / "ejabberdctl.cfg").write_text(
            f"EJABBERD_CONFIG_PATH={self.dir / 'ejabberd.yml'}\nERLANG_NODE=swbbench{self.port}@localhost\n")
        inetrc = Path("/etc/ejabberd/inetrc")
        (self.dir / "inetrc").write_text(inetrc.read_text() if inetrc.exists() else
                                         '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n')
        (self.dir / "spool").mkdir()
        (self.dir / "logs").mkdir()
        self.user = "ejabberd" if os.geteuid() == 0 else None
        if self.user:
            for root, dirs, files in os.walk(self.dir):
                shutil.chown(root, self.user, self.user)
                for entry in files:
                    shutil.chown(os.path.join(root, entry), self.user, self.user)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir), "LANG": "C.UTF-8",
                    "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1"}
        self.log = self.dir / "ejabberd.stdout.log"
        self.proc: subprocess.Popen | None = None
        self.users_added = False
        _stoppers.append(self.stop)

    def ctl_args(self, *args: str) -> list[str]:
        return [self.ctl, "--config-dir", str(self.dir), "--ctl-config", str(self.dir / "ejabberdctl.cfg"),
                "--spool", str(self.dir / "spool"), "--logs", str(self.dir / "logs"), *args]

    def run_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        drop = {"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}
        return subprocess.run(self.ctl_args(*args), capture_output=True, text=True, env=self.env, cwd=str(self.dir),
                              timeout=timeout, **drop)

    def version(self) -> str:
        return f"{package_version('ejabberd')}, erlang-base {package_version('erlang-base')}"

    def add_users(self, names: list[str], password: str) -> None:
        """Once per spool (Mnesia keeps them across restarts); the server must be running."""
        if self.users_added:
            return
        users = "".join(f"<user name='{n}' password='{password}'/>" for n in names)
        pie = self.dir / "users.xml"
        pie.write_text("<?xml version='1.0' encoding='UTF-8'?><server-data xmlns='urn:xmpp:pie:0'>"
                       f"<host jid='{self.domain}'>{users}</host></server-data>")
        if self.user:
            shutil.chown(pie, self.user, self.user)
        r = self.run_ctl("import_piefxis", str(pie))
        if r.returncode != 0:
            raise RuntimeError(f"ejabberdctl import_piefxis failed: {(r.stdout + r.stderr).strip()[-500:]}")
        r = self.run_ctl("registered_users", self.domain)
        count = len(r.stdout.split())
        if count < len(names):
            raise RuntimeError(f"ejabberd has {count} of {len(names)} users after import_piefxis")
        self.users_added = True

    def start(self) -> None:
        self.proc = start_process(self.ctl_args("foreground"), self.log, env=self.env, cwd=self.dir, user=self.user)
        wait_port(self.port, self.proc, self.log, timeout=90)

    def pids(self) -> list[int]:
        return [self.proc.pid, *proc_descendants(self.proc.pid)] if self.proc else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM to beam.smp (Erlang stops cleanly); the ejabberdctl shell then exits by itself.
            for pid in proc_descendants(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for pid in proc_descendants(self.proc.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            stop_process(self.proc)
            self.proc = None
        # The Erlang port mapper daemon the node started (its own port, nothing else registered there).
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        if os.access(epmd, os.X_OK):
            subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], capture_output=True, env=self.env, timeout=20)

    def dispose(self) -> None:
        self.stop()
        if self.stop in _stoppers:
            _stoppers.remove(self.stop)
        remove_tmpdir(self.dir)


class SwitchboardXMPP:
    """The release `switchboard serve` with `[xmpp]` (and `[line]`) on free ports, for section 6."""

    name = "switchboard"

    def __init__(self, binary: str, password: str):
        self.server = SwitchboardServer(binary, password, xmpp=True)
        self.port = self.server.xmpp_port

    def version(self) -> str:
        return "this build (`switchboard serve`)"

    def add_users(self, names: list[str], password: str) -> None:
        self.server.add_users(names)

    def start(self) -> None:
        self.server.start()

    def pids(self) -> list[int]:
        p = self.server.proc
        return [p.pid, *proc_descendants(p.pid)] if p else []

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def stop(self) -> None:
        self.server.stop()

    def dispose(self) -> None:
        self.server.dispose()


def xmpp_room(n: int, mode: str, run: int) -> str:
    return f"bench-{n}-{mode}-{run}"


def xmpp_args(bench_bin: str, port: int, password: str, n: int, mode: str, room: str, quick: bool) -> list[str]:
    args = [bench_bin, "xmpp", "--host", "127.0.0.1", "--port", str(port), "--domain", XMPP_DOMAIN,
            "--occupants", str(n), "--user-prefix", "bench", "--password", password, "--room", room,
            "--drain-timeout", str(XMPP_DRAIN_SECONDS)]
    if mode == "paced":
        args += ["--senders", "1", "--rate", str(max(1, round(XMPP_PACED_DELIVERIES / n))),
                 "--seconds", str(2 if quick else XMPP_PACED_SECONDS)]
    else:
        args += ["--saturate", "--senders", str(XMPP_SATURATE_SENDERS), "--window", str(XMPP_WINDOW),
                 "--seconds", str(2 if quick else XMPP_SATURATE_SECONDS)]
    return args


def bench_xmpp(binary: str, bench_bin: str, repeats: int, quick: bool) -> dict:
    """Switchboard, Prosody and ejabberd one after another in every repeat (never two at once), each
    started fresh and given the same runs: for 50 and 200 occupants a paced and a saturating
    `switchboard-bench xmpp`, which reads the server's CPU time over its measured phase."""
    password = "bench-password"
    names = [f"bench{i:03d}" for i in range(max(XMPP_SIZES))]
    out: dict = {"runs": {}, "notes": [], "commands": [], "versions": {}, "nofile": raise_nofile(),
                 "sizes": list(XMPP_SIZES), "paced_deliveries": XMPP_PACED_DELIVERIES,
                 "paced_seconds": 2 if quick else XMPP_PACED_SECONDS,
                 "saturate_seconds": 2 if quick else XMPP_SATURATE_SECONDS,
                 "saturate_senders": XMPP_SATURATE_SENDERS, "window": XMPP_WINDOW, "servers": []}
    servers: list = []
    try:
        log(f"xmpp: switchboard, creating {len(names)} users")
        sb = SwitchboardXMPP(binary, password)
        servers.append(sb)
        sb.add_users(names, password)
        sb.server.add_rooms([xmpp_room(n, m, r) for r in range(repeats) for n in XMPP_SIZES for m in ("paced", "saturate")])
        prosody = shutil.which("prosody") or ("/usr/bin/prosody" if Path("/usr/bin/prosody").exists() else None)
        if prosody:
            servers.append(ProsodyServer(prosody))
            servers[-1].add_users(names, password)
        else:
            out["notes"].append("prosody is not installed (`apt-get install prosody`): no Prosody column.")
        ctl = shutil.which("ejabberdctl") or ("/usr/sbin/ejabberdctl" if Path("/usr/sbin/ejabberdctl").exists() else None)
        if ctl:
            servers.append(EjabberdServer(ctl))
        else:
            out["notes"].append("ejabberd is not installed (`apt-get install ejabberd`): no ejabberd column.")
        out["servers"] = [s.name for s in servers]
        out["versions"] = {s.name: s.version() for s in servers}
        for run in range(repeats):
            for server in servers:
                try:
                    log(f"xmpp: starting {server.name} (repeat {run + 1})")
                    server.start()
                    if server.name == "ejabberd":
                        server.add_users(names, password)
                    for n in XMPP_SIZES:
                        for mode in ("paced", "saturate"):
                            room = xmpp_room(n, mode, run)
                            pids = server.pids()
                            args = xmpp_args(bench_bin, server.port, password, n, mode, room, quick)
                            for pid in pids:
                                args += ["--server-pid", str(pid)]
                            if run == 0 and server.name == "switchboard":
                                shown = xmpp_args("switchboard-bench", 0, password, n, mode, "bench", quick)
                                out["commands"].append(" ".join(shlex.quote(a) for a in shown)
                                                       .replace("--port 0", "--port <port>").replace(password, "<pw>")
                                                       + " --server-pid <pid>")
                            r = run_json(args, timeout=XMPP_DRAIN_SECONDS * 2 + 240)
                            if not server.alive():
                                r = {"error": f"{server.name} exited during the run", "ok": False}
                            else:
                                # Let the server finish the leave presences before the next run.
                                r["server_busy_after_run_seconds"] = wait_pids_idle(pids)
                            out["runs"].setdefault(f"{server.name}_{n}_{mode}", []).append(r)
                except Exception as e:  # noqa: BLE001 -- reported in the document
                    out["notes"].append(f"{server.name}, repeat {run + 1}: {e}")
                finally:
                    server.stop()
    except Exception as e:  # noqa: BLE001
        out["notes"].append(f"{e}")
    finally:
        for server in servers:
            server.dispose()
    return out


def render_xmpp(xm: dict, sections: dict, summary: list) -> list[str]:
    sec: list[str] = []
    sec.append("## 6. XMPP MUC fan-out: Switchboard vs Prosody vs ejabberd")
    sec.append("")
    runs = xm.get("runs", {}) if xm else {}
    if not runs:
        sec.append("Not run." + (" " + "; ".join(xm.get("notes", [])) if xm and xm.get("notes") else ""))
        sec.append("")
        return sec
    servers = xm.get("servers") or ["switchboard", *XMPP_PEERS]
    titles = {"switchboard": "Switchboard", "prosody": "Prosody", "ejabberd": "ejabberd"}
    versions = xm.get("versions", {})
    sizes = xm.get("sizes", list(XMPP_SIZES))
    pdel, psec, ssec = xm.get("paced_deliveries"), xm.get("paced_seconds"), xm.get("saturate_seconds")
    window, senders = xm.get("window"), xm.get("saturate_senders")
    sec.append("The same load against three servers, one after another in every repeat (never two at once; each "
               "started fresh for its turn and stopped afterwards), all on loopback with plain XMPP streams "
               "(SASL PLAIN without TLS), users `bench000`…`bench199` with the same password, the room "
               f"`<room>@conference.{XMPP_DOMAIN}` (a new one per run):")
    sec.append("")
    sec.append("* **Switchboard**: the release `switchboard serve` with `[xmpp]` on a free port ("
               + ", ".join(f"`{k}` = {toml_value(v) if isinstance(v, bool) else f'{v:,}'}" for k, v in XMPP_SERVER_SETTINGS.items())
               + "), a fresh data dir (SQLite history: every message is committed before it is delivered), users "
               "made with `switchboard user add` (`SWITCHBOARD_ACCOUNTS_PBKDF2_ITERATIONS=4096`), rooms with "
               "`switchboard room create`. Occupant nick = user name.")
    sec.append(f"* **Prosody** (Debian {versions.get('prosody', '?')}): `prosody -F` with "
               "`Tests/bench/peers/prosody.cfg.lua` in a temp dir (`c2s_require_encryption = false`, "
               "`allow_unencrypted_plain_auth = true`, `internal_plain` accounts written into its data dir, "
               "no `mod_limits`, no s2s, `Component \"conference.localhost\" \"muc\"` with `muc_room_locking = false`, "
               "history length 20 in memory), as user `prosody`.")
    sec.append(f"* **ejabberd** (Debian {versions.get('ejabberd', '?')}): `ejabberdctl … foreground` with "
               "`Tests/bench/peers/ejabberd.yml` and its own ctl config, Mnesia spool, node name and epmd port in a temp "
               "dir (`starttls_required: false`, `shaper: none`, `c2s_shaper: none`, listener `backlog: 1024`, "
               "`mod_muc` with `max_users`/`max_users_presence` 100,000, `min_message_interval: 0`, history 20, no "
               "`mod_mam`; accounts by one `ejabberdctl import_piefxis`), as user `ejabberd`.")
    sec.append("")
    sec.append("`switchboard-bench xmpp` (SwiftNIO, one event loop group with one thread per core) opens N occupant "
               "streams: stream header, SASL PLAIN, resource binding, then presence to `<room>@…/<user>` with "
               "`<history maxstanzas='0'/>`. The first occupant joins alone (a room a server announces as new, status "
               "201, is accepted as an instant room); then the rest join, and the run waits until every occupant has "
               "seen the presence of every other one (N × (N − 1)) and the streams have been quiet for 0.5 s. "
               "Messages are `<message type='groupchat' id=…><body>…</body></message>` with a 64-byte body that "
               "starts with the CLOCK_MONOTONIC send time, the index and the sender; every occupant, the senders "
               "included (rooms reflect messages), receives every message, so expected deliveries = sent × N. "
               "Receivers parse no XML while measuring: they cut the byte stream at `<message`…`</message>` and "
               "read the digits after `<body>` (memchr/memcmp), taking the receive time once per socket read.")
    sec.append("")
    sec.append(f"* **paced**: 1 sender at {fmt_int(pdel)} / N messages/s (≈ {fmt_int(pdel)} deliveries/s: "
               + ", ".join(f"{round(pdel / n)} msg/s with {n}" for n in sizes)
               + f") for {psec} s. The rate is one all three servers sustain on this machine: Prosody's single "
               "Lua thread spends ~150–250 µs per delivered stanza, so it saturates at about 4,000–7,000 "
               "deliveries/s here, and at a higher offered rate its latency is only its queue growing.")
    sec.append(f"* **saturation**: {senders} senders for {ssec} s, as fast as at most {window} messages sent but not "
               "yet delivered to every occupant allow (so the server is not simply buffering); deliveries/s = all "
               "deliveries / (last delivery − first send).")
    sec.append("")
    sec.append("*server CPU per delivered stanza*: utime + stime of the server's processes "
               "(`/proc/<pid>/stat`; for ejabberd the `ejabberdctl` shell, `beam.smp` and its children) from the "
               "first send to the last delivery (or the end of the drain), divided by the stanzas delivered. "
               "*load generator*: the CPU of `switchboard-bench xmpp` over the same window, in cores.")
    sec.append("")

    def rs(server, n, mode):
        return good(runs.get(f"{server}_{n}_{mode}", []))

    def lat(r_, key):
        return [r["latency"][key] for r in r_ if r.get("latency", {}).get("count")]

    def col(r_, key):
        return [r[key] for r in r_ if r.get(key) is not None]

    def fmt_lat(us) -> str:
        if isinstance(us, (int, float)) and us >= 1_000_000:
            return f"{us / 1e6:.2f} s"
        return fmt_ms(us)

    def fmt_us(v) -> str:
        return f"{v:.1f} µs" if isinstance(v, (int, float)) else "n/a"

    sec.append("| occupants | run | server | delivered stanzas/s | delivered / expected | latency p50 | p99 | max | "
               "server CPU per delivered stanza | server CPU (cores) | load generator CPU (cores) | verification |")
    sec.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for mode in ("paced", "saturate"):
            title = f"paced {fmt_int(pdel)}/s" if mode == "paced" else "saturation"
            for server in servers:
                r_ = rs(server, n, mode)
                if not r_:
                    errs = [r.get("error", "?") for r in runs.get(f"{server}_{n}_{mode}", [])]
                    sec.append(f"| {n} | {title} | {titles[server]} | not measured{': ' + errs[0][:200] if errs else ''} "
                               "| | | | | | | | |")
                    continue
                dps = col(r_, "delivered_per_s")
                frac = [r["delivered"] / r["expected_deliveries"] for r in r_ if r.get("expected_deliveries")]
                cpu = col(r_, "server_cpu_us_per_delivery")
                sec.append(
                    f"| {n} | {title} | {titles[server]} | {fmt_int(med(dps))}{spread(dps, fmt_int)} | "
                    f"{(med(frac) or 0) * 100:.1f} % | {fmt_lat(med(lat(r_, 'p50_us')))} | "
                    f"{fmt_lat(med(lat(r_, 'p99_us')))}{spread(lat(r_, 'p99_us'), fmt_lat)} | {fmt_lat(med(lat(r_, 'max_us')))} | "
                    f"{fmt_us(med(cpu))}{spread(cpu, fmt_us)} | {med(col(r_, 'server_cpu_cores')) or 0:.2f} | "
                    f"{med(col(r_, 'client_cpu_cores')) or 0:.2f} | {verification(runs.get(f'{server}_{n}_{mode}', []))} |")
    sec.append("")

    # Switchboard against the peers.
    sec.append("| metric | Switchboard | Prosody | ejabberd | Switchboard / Prosody | Switchboard / ejabberd | target | met? |")
    sec.append("|---|---|---|---|---|---|---|---|")
    cpu_ok_all: dict[int, list[str]] = {}
    p99_ok_all: dict[int, list[str]] = {}
    values: dict = {}
    for n in sizes:
        for mode in ("paced", "saturate"):
            title = f"paced {fmt_int(pdel)}/s" if mode == "paced" else "saturation"
            cpu = {s: med(col(rs(s, n, mode), "server_cpu_us_per_delivery")) for s in ["switchboard", *XMPP_PEERS]}
            p99 = {s: med(lat(rs(s, n, mode), "p99_us")) for s in ["switchboard", *XMPP_PEERS]}
            dps = {s: med(col(rs(s, n, mode), "delivered_per_s")) for s in ["switchboard", *XMPP_PEERS]}
            values[(n, mode)] = (cpu, p99, dps)

            def ratio(a, b):
                return f"{a / b:.2f} ×" if a is not None and b else "n/a"

            sb, pr, ej = cpu["switchboard"], cpu["prosody"], cpu["ejabberd"]
            if None in (sb, pr, ej):
                ok = "**not measured**"
            else:
                ok = "yes" if sb <= XMPP_CPU_RATIO_PROSODY * pr and sb < ej else "**no (missed)**"
            cpu_ok_all.setdefault(n, []).append(ok)
            sec.append(f"| {n} occupants, {title}: server CPU per delivered stanza | {fmt_us(sb)} | {fmt_us(pr)} | "
                       f"{fmt_us(ej)} | {ratio(sb, pr)} | {ratio(sb, ej)} | ≤ {XMPP_CPU_RATIO_PROSODY:g} × Prosody and "
                       f"< ejabberd | {ok} |")
            sb, pr, ej = p99["switchboard"], p99["prosody"], p99["ejabberd"]
            if None in (sb, pr, ej):
                ok = "**not measured**"
            else:
                ok = "yes" if sb < pr and sb < ej else "**no (missed)**"
            p99_ok_all.setdefault(n, []).append(ok)
            sec.append(f"| {n} occupants, {title}: latency p99 | {fmt_lat(sb)} | {fmt_lat(pr)} | {fmt_lat(ej)} | "
                       f"{ratio(sb, pr)} | {ratio(sb, ej)} | < both | {ok} |")
            sb, pr, ej = dps["switchboard"], dps["prosody"], dps["ejabberd"]
            sec.append(f"| {n} occupants, {title}: delivered stanzas/s | {fmt_int(sb)} | {fmt_int(pr)} | {fmt_int(ej)} | "
                       f"{ratio(sb, pr)} | {ratio(sb, ej)} | – | – |")
    sec.append("")

    def all_ok(oks):
        if any(o == "**not measured**" for o in oks):
            return "**not measured**"
        return "yes" if all(o == "yes" for o in oks) else "**no (missed)**"

    for n in sizes:
        (cp, pp, dp), (cs, ps, ds) = values[(n, "paced")], values[(n, "saturate")]
        summary.append((f"XMPP MUC, {n} occupants: server CPU per delivered stanza, paced / saturation "
                        "(Switchboard; Prosody; ejabberd)",
                        f"{fmt_us(cp['switchboard'])} / {fmt_us(cs['switchboard'])}; {fmt_us(cp['prosody'])} / "
                        f"{fmt_us(cs['prosody'])}; {fmt_us(cp['ejabberd'])} / {fmt_us(cs['ejabberd'])}",
                        f"≤ {XMPP_CPU_RATIO_PROSODY:g} × Prosody and < ejabberd", all_ok(cpu_ok_all[n])))
        summary.append((f"XMPP MUC, {n} occupants: latency p99, paced {fmt_int(pdel)}/s / saturation "
                        "(Switchboard; Prosody; ejabberd)",
                        f"{fmt_lat(pp['switchboard'])} / {fmt_lat(ps['switchboard'])}; {fmt_lat(pp['prosody'])} / "
                        f"{fmt_lat(ps['prosody'])}; {fmt_lat(pp['ejabberd'])} / {fmt_lat(ps['ejabberd'])}",
                        "< both", all_ok(p99_ok_all[n])))
        summary.append((f"XMPP MUC, {n} occupants: delivered stanzas/s at saturation (Switchboard; Prosody; ejabberd)",
                        f"{fmt_int(ds['switchboard'])}; {fmt_int(ds['prosody'])}; {fmt_int(ds['ejabberd'])}", "–", "–"))

    firsts = []
    for key, rr in runs.items():
        for r in rr:
            if r.get("first_errors"):
                firsts.append(f"`{key}`: " + "; ".join(f"`{e[:160]}`" for e in r["first_errors"][:2]))
                break
    if firsts:
        sec.append("First errors seen: " + " · ".join(firsts[:6]))
        sec.append("")
    append_footer(sec, xm, sections.get("xmpp", {}),
                  "Commands (Switchboard, first repeat; the same for the peers with their port and pids):")
    return sec


# --------------------------------------------------------------------------------------------
# Report


def fmt_int(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) else "n/a"


def fmt_ms(us) -> str:
    return f"{us / 1000:.3f} ms" if isinstance(us, (int, float)) else "n/a"


def good(runs: list[dict]) -> list[dict]:
    return [r for r in runs if "error" not in r]


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def spread(values: list[float], fmt) -> str:
    if len(values) < 2:
        return ""
    return f" ({fmt(min(values))} – {fmt(max(values))})"


def met(value, target, higher_is_better=True) -> str:
    if value is None:
        return "**not measured**"
    ok = value >= target if higher_is_better else value < target
    return "yes" if ok else "**no (missed)**"


def verification(runs: list[dict]) -> str:
    if not runs:
        return "no run"
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return "FAILED: " + "; ".join(errors)
    bad = [r for r in runs if not r.get("ok")]
    return "all checks passed" if not bad else f"{len(bad)} of {len(runs)} runs failed verification"


def render_ws(ws: dict, sections: dict, summary: list) -> list[str]:
    def fmt_lat(us) -> str:
        if isinstance(us, (int, float)) and us >= 1_000_000:
            return f"{us / 1e6:.1f} s"
        return fmt_ms(us)

    sec: list[str] = []
    sec.append("## 4. WebSocket: fan-out, memory per idle connection, line ↔ WebSocket")
    sec.append("")
    if not ws or (not ws.get("fanout") and not ws.get("idle") and not ws.get("cross")):
        sec.append("Not run.")
        sec.append("")
        return sec
    big, small = ws["clients"], ws["small_clients"]
    secs = ws["paced_seconds"]
    sec.append("The release `switchboard serve` with `[line]` and `[websocket]` on free ports (`[websocket]` "
               + ", ".join(f"`{k}` = {v:,}" for k, v in WS_SERVER_SETTINGS.items())
               + "; `limits.session_queue` at its default of 4,096; a fresh data dir), users `bench000`…`bench099` "
               "and the sender `benchsnd` created with `switchboard user add` (`SWITCHBOARD_ACCOUNTS_PBKDF2_ITERATIONS=4096`). "
               "The load generator (`switchboard-bench ws`, a hand-rolled RFC 6455 client on one SwiftNIO event loop "
               "group with one thread per core) fetches one bearer token per user with `POST /api/v1/token` and opens "
               f"its connections with `{{\"op\":\"auth\",\"token\":…}}`, `{{\"op\":\"join\",\"room\":…}}`: the receivers log in "
               f"as {WS_USERS} users round robin (so up to {big // WS_USERS} connections per user — join/leave envelopes "
               "are per user and protocol) from 4 source addresses 127.0.0.2–5, in batches of 250 connections. "
               "The sender (its own user: a session never receives its own messages) sends "
               "`{\"op\":\"send\",\"room\":…,\"body\":…}` with a 64-byte body that starts with its CLOCK_MONOTONIC send time; "
               "receivers find `\"kind\":\"chat\",\"body\":\"` in each envelope frame and take the receive time once per "
               "socket read, so latency = receive − send in one process. With many receivers each receiver keeps the "
               "latency of an evenly spread subset of messages (at most ~4 million samples per run; the stride is in the raw "
               f"JSON). Open-files limit of the driver and its children: {ws.get('nofile', '?')}.")
    sec.append("")
    sec.append(f"* **paced**: 1 sender at {WS_RATE:,} msg/s for {secs} s (and at {WS_LOW_RATE} msg/s for "
               f"{ws.get('low_seconds', '?')} s, a lower load). Offered deliveries = rate × receivers; "
               f"a run waits at most {WS_DRAIN_SECONDS} s after the last send, so *delivered / expected* below 100 % "
               "means the server was still that far behind (not that messages were dropped: *closed by server* counts "
               "sessions dropped as slow consumers).")
    sec.append("* **saturation**: the sender keeps at most 64 sends unacknowledged and at most 256 messages not yet "
               "delivered to every receiver (the second window keeps each receiver's server-side queue below "
               "`session_queue`, so the run measures throughput instead of slow-consumer drops); deliveries/s = all "
               "deliveries / (last delivery − first send).")
    sec.append("")
    fan = ws.get("fanout", {})

    def col(label):
        return good(fan.get(label, []))

    def lat(rs, key):
        return [r["latency"][key] for r in rs if r.get("latency", {}).get("count")]

    points = [("paced_big", f"{big:,} clients, {WS_RATE:,} msg/s"), ("paced_big_low", f"{big:,} clients, {WS_LOW_RATE:,} msg/s"),
              ("saturate_big", f"{big:,} clients, saturation"),
              ("paced_small", f"{small:,} clients, {WS_RATE:,} msg/s"), ("saturate_small", f"{small:,} clients, saturation")]
    sec.append("| run | offered deliveries/s | delivered/s | delivered / expected | latency p50 | p99 | p99.9 | max | "
               "send rate | ack p99 | closed by server (slow consumer) | server CPU (s) | client CPU (s) | setup (s) |")
    sec.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, title in points:
        rs = col(label)
        if not rs:
            errs = [r.get("error", "?") for r in fan.get(label, [])]
            sec.append(f"| {title} | – | not measured{': ' + errs[0][:200] if errs else ''} | | | | | | | | | | | |")
            continue
        offered = "–" if label.startswith("saturate") else fmt_int(rs[0]["rate"] * rs[0]["clients"])
        dps = [r["delivered_per_s"] for r in rs]
        frac = [r["delivered"] / r["expected_deliveries"] for r in rs if r.get("expected_deliveries")]
        sec.append(
            f"| {title} | {offered} | {fmt_int(med(dps))}{spread(dps, fmt_int)} | "
            f"{(med(frac) or 0) * 100:.1f} % | {fmt_lat(med(lat(rs, 'p50_us')))} | {fmt_lat(med(lat(rs, 'p99_us')))}"
            f"{spread(lat(rs, 'p99_us'), fmt_lat)} | {fmt_lat(med(lat(rs, 'p999_us')))} | {fmt_lat(med(lat(rs, 'max_us')))} | "
            f"{fmt_int(med([r['send_rate'] for r in rs]))}/s | {fmt_lat(med([r['ack_latency']['p99_us'] for r in rs]))} | "
            f"{fmt_int(med([r.get('closed_by_server', 0) for r in rs]))} | "
            f"{med([r.get('server_cpu_seconds_whole_run', 0) for r in rs]) or 0:.1f} | "
            f"{med([r['client_cpu_seconds'] for r in rs]) or 0:.1f} | {med([r['setup_seconds'] for r in rs]) or 0:.1f} |")
    sec.append("")
    verif = "; ".join(f"{title}: {verification(fan.get(label, []))}" for label, title in points)
    sec.append(f"Verification (every message delivered to every receiver, no error frame, nobody dropped): {verif}.")
    for label, title in points:
        for r in fan.get(label, []):
            if r.get("first_errors"):
                sec.append("")
                sec.append(f"First errors seen in `{title}`: " + "; ".join(f"`{e[:160]}`" for e in r["first_errors"][:3]))
                break
    sec.append("")
    sec.append("*server CPU*: CPU seconds of the server process over the whole `switchboard-bench ws` run, connection "
               "setup included; *client CPU*: the load generator's CPU during the measured phase. Both share the "
               "machine's cores.")
    sec.append("")

    sat = col("saturate_big")
    sat_dps = med([r["delivered_per_s"] for r in sat])
    pb = col("paced_big")
    pb_p99 = med(lat(pb, "p99_us"))
    summary.append((f"WebSocket fan-out at saturation ({big:,} clients, 1 room)",
                    f"{fmt_int(sat_dps)} deliveries/s" + (f" ({sat_dps / WS_FANOUT_TARGET:.2f} × target)" if sat_dps else ""),
                    f"≥ {fmt_int(WS_FANOUT_TARGET)}/s", met(sat_dps, WS_FANOUT_TARGET)))
    pb_frac = med([r["delivered"] / r["expected_deliveries"] for r in pb if r.get("expected_deliveries")])
    summary.append((f"WebSocket latency p99 ({big:,} clients, {WS_RATE:,} msg/s)",
                    (fmt_lat(pb_p99) + (f" ({pb_p99 / 1000 / WS_P99_TARGET_MS:,.0f} × target)" if pb_p99 else "")
                     + (f"; {pb_frac * 100:.0f} % delivered" if pb_frac is not None else "")),
                    f"< {WS_P99_TARGET_MS:g} ms", met(pb_p99 / 1000 if pb_p99 is not None else None, WS_P99_TARGET_MS, False)))
    pl = col("paced_big_low")
    summary.append((f"… {big:,} clients, {WS_LOW_RATE} msg/s: p50 / p99",
                    f"{fmt_lat(med(lat(pl, 'p50_us')))} / {fmt_lat(med(lat(pl, 'p99_us')))}", "–", "–"))
    ps = col("paced_small")
    ps_p99 = med(lat(ps, "p99_us"))
    summary.append((f"… {small:,} clients, {WS_RATE:,} msg/s: p99, delivered/s (offered {fmt_int(small * WS_RATE)}/s)",
                    f"{fmt_lat(ps_p99)}, {fmt_int(med([r['delivered_per_s'] for r in ps]))}/s", "–", "–"))
    ss = col("saturate_small")
    summary.append((f"… {small:,} clients, saturation: deliveries/s",
                    f"{fmt_int(med([r['delivered_per_s'] for r in ss]))}/s", "–", "–"))

    # Memory.
    sec.append("### Memory per idle authenticated WebSocket connection")
    sec.append("")
    sec.append("A fresh server; its VmRSS (`/proc/<pid>/status`, median of 5 readings after the count settled) with "
               "no client, then after a `switchboard-bench ws-idle` process opened 5,000 connections (token auth + join "
               "of room `idle`, 100 users), then after a second one added 10,000 more (each from its own four 127.0.0.x "
               "source addresses). The clients then stay idle (they answer the server's WebSocket pings). "
               "KiB per connection = (RSS at N − RSS at 0) / N.")
    sec.append("")
    idle = [r for r in ws.get("idle", []) if "error" not in r and r.get("points")]
    sec.append("| connections | server RSS | KiB per connection | server threads | client setup (s) |")
    sec.append("|---|---|---|---|---|")
    if idle:
        rss0 = [r["rss0_kib"] for r in idle]
        sec.append(f"| 0 | {fmt_int(med(rss0))} KiB{spread(rss0, fmt_int)} | – | {idle[0].get('threads0', '?')} | – |")
        for k in range(len(idle[0]["points"])):
            pts = [r["points"][k] for r in idle if len(r["points"]) > k]
            per = [p["kib_per_connection"] for p in pts if "kib_per_connection" in p]
            sec.append(f"| {pts[0]['connections']:,} | {fmt_int(med([p['rss_kib'] for p in pts]))} KiB | "
                       f"{med(per):.2f}{spread(per, lambda v: f'{v:.2f}')} | {pts[0].get('threads', '?')} | "
                       f"{med([p.get('setup_seconds') or 0 for p in pts]):.1f} |")
        after = [r.get("rss_after_close_kib") for r in idle if r.get("rss_after_close_kib")]
        sec.append(f"| 0 again (all closed) | {fmt_int(med(after))} KiB | – | – | – |")
    sec.append("")
    sec.append(f"Verification: {verification(ws.get('idle', []))}.")
    sec.append("")
    per15 = med([r["points"][-1]["kib_per_connection"] for r in idle if r["points"] and "kib_per_connection" in r["points"][-1]])
    per5 = med([r["points"][0]["kib_per_connection"] for r in idle if r["points"] and "kib_per_connection" in r["points"][0]])
    mq = ws.get("mosquitto", {})
    if mq.get("points") and "error" not in mq:
        sec.append(f"For comparison, measured the same way on this machine: **Mosquitto** ({mq.get('version', '?')}, "
                   "`persistence false`, one listener on loopback) with N idle MQTT 3.1.1 clients (clean session, "
                   "keepalive 0, each subscribed to `bench/idle` at QoS 0, opened from Python sockets): RSS "
                   f"{fmt_int(mq['rss0_kib'])} KiB at 0, "
                   + ", ".join(f"{fmt_int(p['rss_kib'])} KiB at {p['connections']:,} ({p['kib_per_connection']:.2f} KiB each)"
                               for p in mq["points"]) + ". EMQX publishes about 9 KB per MQTT connection (not measured here).")
    else:
        sec.append("For context (not measured here: " + mq.get("error", "mosquitto not run") + "): EMQX publishes about "
                   "9 KB per MQTT connection; Mosquitto was measured at about 0.7 KB per MQTT session.")
    sec.append("")
    summary.append(("Server memory per idle authenticated WebSocket connection (15,000 / 5,000)",
                    (f"{per15:.2f} KiB" if per15 is not None else "n/a") + (f" / {per5:.2f} KiB" if per5 is not None else "")
                    + (f" ({per15 / WS_MEM_TARGET_KIB:.2f} × target)" if per15 is not None else ""),
                    f"≤ {WS_MEM_TARGET_KIB:g} KiB",
                    "**not measured**" if per15 is None else ("yes" if per15 <= WS_MEM_TARGET_KIB else "**no (missed)**")))

    # Cross-protocol.
    cross = ws.get("cross", {})
    sec.append("### Across protocols: line ↔ WebSocket")
    sec.append("")
    sec.append(f"The same server; {CROSS_RECEIVERS} receivers of one protocol (WebSocket receivers as users "
               f"`bench000`…`bench099`, one connection each; line receivers `AUTH` with the password) and 1 sender "
               f"`benchsnd` of the other, {WS_RATE:,} msg/s, 64-byte bodies. Line participants are the `switchboard-bench "
               "line` client (`SAY`/`MSG`); WebSocket → WebSocket is the same load for comparison (section 3 has line → line).")
    sec.append("")
    sec.append("| direction | latency p50 | p90 | p99 | p99.9 | max | delivered/s | sender ack p99 | target p99 | met? |")
    sec.append("|---|---|---|---|---|---|---|---|---|---|")
    for label, title in [("line_to_ws", "line → WebSocket"), ("ws_to_line", "WebSocket → line"), ("ws_to_ws", "WebSocket → WebSocket")]:
        rs = good(cross.get(label, []))
        p99 = med(lat(rs, "p99_us"))
        target = f"< {CROSS_P99_TARGET_MS:g} ms" if label != "ws_to_ws" else "–"
        ok = met(p99 / 1000 if p99 is not None else None, CROSS_P99_TARGET_MS, False) if label != "ws_to_ws" else "–"
        sec.append(f"| {title} | {fmt_lat(med(lat(rs, 'p50_us')))} | {fmt_lat(med(lat(rs, 'p90_us')))} | "
                   f"{fmt_lat(p99)}{spread(lat(rs, 'p99_us'), fmt_lat)} | {fmt_lat(med(lat(rs, 'p999_us')))} | "
                   f"{fmt_lat(med(lat(rs, 'max_us')))} | {fmt_int(med([r['delivered_per_s'] for r in rs]))} | "
                   f"{fmt_lat(med([r['ack_latency']['p99_us'] for r in rs]))} | {target} | {ok} |")
        if label != "ws_to_ws":
            summary.append((f"{title} latency p99 / p50 ({CROSS_RECEIVERS} receivers, {WS_RATE:,} msg/s)",
                            f"{fmt_lat(p99)} / {fmt_lat(med(lat(rs, 'p50_us')))}", target, ok))
    sec.append("")
    sec.append("Verification: " + "; ".join(f"{k.replace('_', ' ')}: {verification(v)}" for k, v in cross.items()) + ".")
    for note in ws.get("notes", []):
        sec.append("")
        sec.append(f"**Note:** {note}")
    sec.append("")
    if foreign_note(sections.get("ws", {})):
        sec.append(foreign_note(sections["ws"]))
        sec.append("")
    return sec


def render_sip(sip: dict, summary: list) -> list[str]:
    """Section 7: Switchboard's SIP listener against Kamailio (Tests/bench/sip_bench.py)."""
    import sip_bench
    sec = ["## 7. SIP: registrar and relayed MESSAGE, side by side with Kamailio", ""]
    if not sip:
        return sec + ["Not run (`--only` left it out).", ""]
    sec.append(sip_bench.__doc__.split("Used by")[0].strip())
    sec.append("")
    sec.append("Kamailio 5.6 (Debian) runs `Tests/bench/peers/kamailio.cfg` (tm, registrar with an in-memory "
               "usrloc, auth_db over db_text, 2 UDP workers); Switchboard the release build with "
               "`digest_algorithms = [\"MD5\"]` (sipp 3.6 answers only MD5) and the rate cap lifted. Load: "
               f"sipp, {sip.get('users')} users cycling for REGISTER, one sender and one receiver UA for MESSAGE, "
               "every sipp with 4 MiB socket buffers (`-buff_size`; sipp's 64 KiB default dropped bursts of answers)"
               + (" (quick mode: shorter runs)." if sip.get("quick") else "."))
    sec.append("")
    sec.append(sip_bench.render(sip))
    sec.append("")
    sb, k = sip["switchboard"], sip["kamailio"]

    def lost(run: dict) -> bool:
        done = (run.get("successful") or 0) + (run.get("failed") or 0)
        return done == 0 or (run.get("failed") or 0) > 0.01 * done

    def verdict(ok: bool, key: str) -> str:
        if lost(sb[key]) or lost(k[key]):
            return "n/a (a run lost calls)"
        return "yes" if ok else "**no (missed)**"

    for name, key in (("SIP authenticated REGISTER/s (vs Kamailio)", "register_saturation"),
                      ("SIP relayed MESSAGE/s (vs Kamailio)", "message_saturation")):
        a, b = sb[key].get("calls_per_s") or 0, k[key].get("calls_per_s") or 0
        summary.append((name, f"{a:,.0f} vs {b:,.0f} ({a / b:.2f} ×)" if b else f"{a:,.0f}", "≥ Kamailio",
                        verdict(bool(b) and a >= b, key)))
    for name, key in (("SIP CPU µs per REGISTER transaction (vs Kamailio)", "register_saturation"),
                      ("SIP CPU µs per MESSAGE transaction (vs Kamailio)", "message_saturation")):
        a, b = sb[key].get("cpu_us_per_transaction"), k[key].get("cpu_us_per_transaction")
        summary.append((name, f"{a} vs {b}", "≤ Kamailio", verdict(bool(a and b and a <= b), key)))
    return sec


def render(md: list[str], machine: dict, command: str, started: dt.datetime, finished: dt.datetime,
           fanout: list[dict], history: dict, line: dict, repeats: int, quick: bool,
           sections: dict[str, dict], ws: dict | None = None, mqtt: dict | None = None,
           reused: str | None = None, xmpp: dict | None = None, sip: dict | None = None) -> None:
    summary: list[tuple[str, str, str, str]] = []

    md.append("# Switchboard benchmarks")
    md.append("")
    md.append(f"Generated by `Tests/bench/run_bench.py` on {started.strftime('%Y-%m-%d %H:%M UTC')} "
              f"(took {(finished - started).total_seconds() / 60:.1f} min).")
    md.append("")
    md.append(f"Command: `{command}`")
    md.append("")
    if quick:
        md.append("> **Quick mode** (`--quick`): shortened runs for a smoke test; not the reference numbers.")
        md.append("")
    md.append(f"Each figure is the **median of {repeats} run{'s' if repeats > 1 else ''}** (range in parentheses) unless said otherwise. "
              "Nothing is extrapolated: a number is what the run measured, a miss is reported as a miss.")
    md.append("")

    if reused:
        md.append(f"> {reused}")
        md.append("")
    md.append("## Machine")
    md.append("")
    md.append("| | |")
    md.append("|---|---|")
    for key, label in [("cpu", "CPU"), ("nproc", "cores (`nproc`)"), ("memory", "memory"), ("os", "OS"),
                       ("kernel", "kernel"), ("swift", "Swift"), ("sqlite", "SQLite (libsqlite3-0)"),
                       ("ngircd", "ngircd"), ("prosody", "Prosody (Debian package)"),
                       ("ejabberd", "ejabberd (Debian package)"), ("temp_fs", "temp dirs (SQLite files)"),
                       ("loadavg", "load average (1/5/15 min) at the start"),
                       ("loadavg_end", "load average at the end"),
                       ("quiet", "other processes before starting"),
                       ("foreign_cpu", "CPU used by other processes during the run")]:
        md.append(f"| {label} | {machine.get(key, 'unknown')} |")
    md.append("")
    md.append("Everything (load generators, bus, SQLite, servers) shares these cores, so the "
              "benchmarks measure the whole system on this box, not the server alone. CPU used by other "
              "processes during the run (a shared machine) shows up as noise; it is measured above "
              "(/proc/stat busy time minus this script's and its children's CPU time).")
    md.append("")

    # ---- 1
    sec1: list[str] = []
    sec1.append("## 1. In-process bus fan-out (no network)")
    sec1.append("")
    sample = next((r for row in fanout for r in row["runs"] if "error" not in r), {})
    sec1.append("`switchboard-bench fanout`: a `LocalBus` with subscriber sessions (`SessionHandle`s opened with a "
                f"counting sink) and {sample.get('publishers', 1)} publisher session(s) joined to every room, "
                "publishing round robin over the rooms "
                f"with at most {fmt_int(sample.get('window', 8192))} unacknowledged publishes (draining their acks). "
                f"{sample.get('consumers', 1)} consumer thread(s) drain the "
                "subscribers: `outboxReady` puts the session on the consumer's ready list, the consumer calls "
                "`takeEvents()` and counts the chat envelopes (an idle consumer polls every 50 µs, so no wakeup "
                "syscall is charged to the bus thread). The bus's `sessionQueueCapacity` is larger than any "
                "session can ever hold, and every run verifies delivered == published × subscribers, no session "
                "dropped, every ack received and seq order per subscriber. The time runs from the first publish "
                "to the last delivery or ack. 64-byte bodies.")
    sec1.append("")
    sec1.append("The **InMemoryHistoryStore** rows isolate the bus (history kept in memory); the **SQLiteStore** rows "
                "use the real store (WAL, `synchronous = NORMAL`, in a temp dir), which the bus commits to before "
                "delivering.")
    sec1.append("")
    sec1.append("| scenario | history store | deliveries per run | deliveries/s | target | met? | publishes/s | group commits (mean batch) | time in commit | CPU cores busy | verification |")
    sec1.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in fanout:
        runs = good(row["runs"])
        rates = [r["deliveries_per_s"] for r in runs]
        m = med(rates)
        store = "InMemoryHistoryStore" if row["store"] == "memory" else "SQLiteStore"
        pub = med([r["publishes_per_s"] for r in runs])
        commits = med([r["commits"] for r in runs])
        batch = med([r["mean_batch"] for r in runs])
        share = med([r["commit_seconds"] / r["seconds"] for r in runs if r.get("seconds")])
        cores = med([r["cpu_cores_busy"] for r in runs])
        share_s = f"{share * 100:.0f} %" if share is not None else "n/a"
        cores_s = f"{cores:.2f}" if cores is not None else "n/a"
        per_run = fmt_int(runs[0]["expected_deliveries"]) if runs else "n/a"
        # The issue's target is for the in-process bus; with SQLite underneath the row shows
        # what the commit allows, for reference.
        in_process = row["store"] == "memory"
        target_s = f"≥ {fmt_int(FANOUT_TARGET)}" if in_process else "– (reference: bound by the SQLite commit)"
        met_s = met(m, FANOUT_TARGET) if in_process else "–"
        sec1.append(f"| {row['scenario']} | {store} | {per_run} | {fmt_int(m)}{spread(rates, fmt_int)} | {target_s} | "
                    f"{met_s} | {fmt_int(pub)} | {fmt_int(commits)} ({fmt_int(batch)}) | "
                    f"{share_s} | {cores_s} | {verification(row['runs'])} |")
        summary.append((f"Fan-out, {row['scenario']}, {store}", f"{fmt_int(m)} deliveries/s",
                        f"≥ {fmt_int(FANOUT_TARGET)}/s" if in_process else target_s, met_s))
    sec1.append("")
    sec1.append("*time in commit*: share of the measured time spent inside `HistoryStore.append` (on the bus's "
                "writer thread, or on its committer thread when a large batch is committed there while the writer "
                "delivers the batch before it). *CPU cores busy*: process CPU time / wall time (2 would be both cores "
                "saturated).")
    sec1.append("")
    if foreign_note(sections.get("fanout", {})):
        sec1.append(foreign_note(sections["fanout"]))
        sec1.append("")

    # ---- 2
    sec2: list[str] = []
    sec2.append("## 2. History group commit (SQLiteStore)")
    sec2.append("")
    raw = good(history["raw"])
    flood = good(history["flood"])
    paced = good(history["paced"])
    first = lambda rs, key, default: rs[0].get(key, default) if rs else default  # noqa: E731
    sec2.append(f"* **raw append**: `SQLiteStore.append` called directly, {fmt_int(first(raw, 'batches', 0))} batches of "
                f"{fmt_int(first(raw, 'batch_size', 0))} envelopes (one room, 64-byte bodies, a fresh database): the "
                "store's own ceiling.")
    sec2.append(f"* **through the bus**: {first(flood, 'publishers', '?')} publisher sessions, each in its own room, flood "
                f"the bus (at most {fmt_int(first(flood, 'window', 0))} unacknowledged each, "
                f"{fmt_int(first(flood, 'messages', 0))} envelopes in all); time from the first publish until every "
                "ack arrived. The bus groups up to `max_batch` = 4,096 envelopes per transaction.")
    sec2.append(f"* **ack latency**: one session publishes at a paced {fmt_int(first(paced, 'rate', 0))} envelopes/s for "
                f"{first(paced, 'seconds', '?')} s; latency from the `publish` call to the ack taken from the outbox by "
                "the session's consumer thread (woken by `outboxReady` through a semaphore).")
    sec2.append("")
    raw_rates = [r["envelopes_per_s"] for r in raw]
    flood_rates = [r["envelopes_per_s"] for r in flood]
    p50s = [r["ack_latency"]["p50_us"] for r in paced]
    p99s = [r["ack_latency"]["p99_us"] for r in paced]
    maxs = [r["ack_latency"]["max_us"] for r in paced]
    c999 = [r["commit_latency"]["p999_us"] for r in paced]
    cmax = [r["commit_latency"]["max_us"] for r in paced]
    m_raw, m_flood, m_p99 = med(raw_rates), med(flood_rates), med(p99s)
    sec2.append("| metric | value | target | met? |")
    sec2.append("|---|---|---|---|")
    sec2.append(f"| raw `SQLiteStore.append`, batches of 1,000 | {fmt_int(m_raw)} envelopes/s{spread(raw_rates, fmt_int)} | "
                f"(reference: the ceiling for the bus) | – |")
    sec2.append(f"| raw append, time per 1,000-envelope batch p50 / p99 | "
                f"{fmt_ms(med([r['batch_latency']['p50_us'] for r in raw]))} / "
                f"{fmt_ms(med([r['batch_latency']['p99_us'] for r in raw]))} | – | – |")
    sec2.append(f"| committed through the bus (4 publishers flooding) | {fmt_int(m_flood)} envelopes/s{spread(flood_rates, fmt_int)} | "
                f"≥ {fmt_int(HISTORY_TARGET)}/s | {met(m_flood, HISTORY_TARGET)} |")
    if flood:
        sec2.append(f"| … group commits (mean batch), share of time inside `append` | "
                    f"{fmt_int(med([r['commits'] for r in flood]))} ({fmt_int(med([r['mean_batch'] for r in flood]))}), "
                    f"{med([r['commit_share'] for r in flood]) * 100:.0f} % | – | – |")
    cid = good(history.get("flood_client_ids", []))
    if cid:
        r = cid[0]
        sec2.append(f"| … same, 1 publisher, a unique `client_id` on each of {fmt_int(r['messages'])} envelopes (1 run) | "
                    f"{fmt_int(r['envelopes_per_s'])} envelopes/s | – (informational) | – |")
    sec2.append(f"| ack latency p50 at 10,000 envelopes/s | {fmt_ms(med(p50s))}{spread(p50s, fmt_ms)} | – | – |")
    sec2.append(f"| ack latency p99 at 10,000 envelopes/s | {fmt_ms(m_p99)}{spread(p99s, fmt_ms)} | "
                f"< {PACED_P99_TARGET_MS:g} ms | {met(m_p99 / 1000 if m_p99 is not None else None, PACED_P99_TARGET_MS, False)} |")
    sec2.append(f"| ack latency max | {fmt_ms(med(maxs))}{spread(maxs, fmt_ms)} | – | – |")
    if paced:
        sec2.append(f"| … achieved rate, group commits (mean batch) | {fmt_int(med([r['achieved_rate'] for r in paced]))}/s, "
                    f"{fmt_int(med([r['commits'] for r in paced]))} ({med([r['mean_batch'] for r in paced]):.2f}) | – | – |")
        sec2.append(f"| … single commit duration p99.9 / max | {fmt_ms(med(c999))} / {fmt_ms(med(cmax))} | – | – |")
    sec2.append("")
    sec2.append(f"Verification: raw {verification(history['raw'])}; through the bus {verification(history['flood'])}; "
                f"with client_ids {verification(history.get('flood_client_ids', []))}; "
                f"paced {verification(history['paced'])}.")
    sec2.append("")
    sec2.append("The `client_id` row shows the cost of the bus's dedup window: every remembered `client_id` is kept "
                "per room (up to `dedupMaxPerRoom` = 10,000), so a room with many client-keyed envelopes pays for "
                "that bookkeeping on the bus's writer thread.")
    if foreign_note(sections.get("history", {})):
        sec2.append("")
        sec2.append(foreign_note(sections["history"]))
    sec2.append("")
    summary.append(("History committed through the bus (SQLite)", f"{fmt_int(m_flood)} envelopes/s",
                    f"≥ {fmt_int(HISTORY_TARGET)}/s", met(m_flood, HISTORY_TARGET)))
    summary.append(("Ack latency p99 at 10,000 envelopes/s", fmt_ms(m_p99), f"< {PACED_P99_TARGET_MS:g} ms",
                    met(m_p99 / 1000 if m_p99 is not None else None, PACED_P99_TARGET_MS, False)))

    # ---- 3
    sec3: list[str] = []
    secs = line["seconds"]
    sec3.append("## 3. End to end on loopback: Switchboard line protocol vs ngircd (IRC)")
    sec3.append("")
    sec3.append(f"`switchboard-bench line`: {CLIENTS} receiving clients and 1 sender in one room, the sender at "
                f"{RATE:,} messages/s for {secs} s (64-byte bodies that start with the send time, CLOCK_MONOTONIC). "
                "Receivers live in the same process and take the receive time once per socket read, so latency = "
                "receive time − send time, with no clock skew. All clients run on one SwiftNIO event loop group "
                f"with one thread per core; the sender is paced by a repeated task every {1000 / RATE:g} ms.")
    sec3.append("")
    sec3.append("* **Switchboard**: the release `switchboard serve` binary, only `[line]` enabled on a free port, "
                "`rate_per_second` = `rate_burst` = 100000, a fresh data dir (SQLite history, WAL, "
                "`synchronous = normal`), users `bench000`…`bench100` created with `switchboard user add` "
                "(`SWITCHBOARD_ACCOUNTS_PBKDF2_ITERATIONS=4096`). Clients `AUTH`, `JOIN bench`; the sender "
                "`SAY bench <text>`; receivers get `MSG` lines. A message is delivered only after its history "
                "row is committed (Switchboard's durability rule), so the SQLite commit is inside this latency.")
    sec3.append("* **ngircd**: `/usr/sbin/ngircd -n` with a temp config (`MaxConnectionsIP = 0`, "
                "`MaxPenaltyTime = 0` which disables penalty delays, `MaxJoins = 0`, no DNS/ident/PAM, "
                "`ServerUID = 65534` when run as root). Clients `NICK`/`USER`, `JOIN #bench`; the sender "
                "`PRIVMSG #bench :<text>`. ngircd keeps no history.")
    sec3.append("")
    lr = good(line["results"]["line"])
    ir = good(line["results"]["irc"])

    def lat(rs, key):
        return [r["latency"][key] for r in rs]

    rows = [
        ("delivery latency p50", "p50_us", None),
        ("delivery latency p90", "p90_us", None),
        ("delivery latency p99", "p99_us", LINE_P99_TARGET_MS),
        ("delivery latency p99.9", "p999_us", None),
        ("delivery latency max", "max_us", None),
    ]
    sec3.append("| metric | Switchboard (line) | ngircd (IRC) | Switchboard / ngircd | target (Switchboard) | met? |")
    sec3.append("|---|---|---|---|---|---|")
    sb_p99 = med(lat(lr, "p99_us"))
    for label, key, target in rows:
        s = med(lat(lr, key))
        n = med(lat(ir, key))
        ratio = f"{s / n:.2f} ×" if s and n else "n/a"
        tgt = f"< {target:g} ms" if target else "–"
        ok = met(s / 1000 if s is not None else None, target, False) if target else "–"
        sec3.append(f"| {label} | {fmt_ms(s)}{spread(lat(lr, key), fmt_ms)} | {fmt_ms(n)}{spread(lat(ir, key), fmt_ms)} | "
                    f"{ratio} | {tgt} | {ok} |")
    sd = [r["delivered_per_s"] for r in lr]
    nd = [r["delivered_per_s"] for r in ir]
    s_tp, n_tp = med(sd), med(nd)
    tp_ratio = f"{s_tp / n_tp:.2f} ×" if s_tp and n_tp else "n/a"
    expected_rate = CLIENTS * RATE
    sec3.append(f"| delivered messages/s (all receivers) | {fmt_int(s_tp)}{spread(sd, fmt_int)} | "
                f"{fmt_int(n_tp)}{spread(nd, fmt_int)} | {tp_ratio} | {fmt_int(expected_rate)} (= offered) | "
                f"{met(s_tp, expected_rate * 0.99)} |")
    lost_s = sum(r.get("lost", 0) for r in lr)
    lost_n = sum(r.get("lost", 0) for r in ir)
    sec3.append(f"| messages lost (all runs) | {fmt_int(lost_s)} | {fmt_int(lost_n)} | – | 0 | "
                f"{'yes' if lost_s == 0 and lr else '**no**'} |")
    sec3.append(f"| out-of-order deliveries (all runs) | {fmt_int(sum(r.get('out_of_order', 0) for r in lr))} | "
                f"{fmt_int(sum(r.get('out_of_order', 0) for r in ir))} | – | 0 | – |")
    if lr:
        sec3.append(f"| sender's `OK SAY` ack latency p50 / p99 | "
                    f"{fmt_ms(med([r['ack_latency']['p50_us'] for r in lr]))} / {fmt_ms(med([r['ack_latency']['p99_us'] for r in lr]))} | "
                    "– (IRC has no ack) | – | – | – |")
    sec3.append(f"| achieved send rate | {fmt_int(med([r['send_rate'] for r in lr]))}/s | "
                f"{fmt_int(med([r['send_rate'] for r in ir]))}/s | – | {RATE:,}/s | – |")
    sec3.append(f"| load generator CPU (s per run) | {med([r['client_cpu_seconds'] for r in lr]) or 0:.2f} | "
                f"{med([r['client_cpu_seconds'] for r in ir]) or 0:.2f} | – | – | – |")
    sec3.append("")
    sec3.append(f"Verification: Switchboard {verification(line['results']['line'])}; ngircd {verification(line['results']['irc'])}.")
    slow = [r for r in ir if r["latency"]["max_us"] >= 900_000]
    if slow:
        sec3.append("")
        sec3.append(f"**Note:** {len(slow)} ngircd run(s) saw a delivery delayed by ≥ 0.9 s, the size of an ngircd "
                    "penalty: its flood control may still have throttled the sender there.")
    elif ir:
        sec3.append("")
        sec3.append("ngircd throttling: with `MaxPenaltyTime = 0` a throttled connection gets a 0 s penalty; no "
                    "delivery was delayed anywhere near the 1 s an ngircd penalty costs, and the achieved rates "
                    "match the offered rate, so ngircd did not throttle the sender in these runs.")
    for r in ir:
        if r.get("errors"):
            sec3.append("")
            sec3.append(f"ngircd run reported errors: {'; '.join(r.get('first_errors', []))}")
            break
    for note in line["notes"]:
        sec3.append("")
        sec3.append(note)
    sec3.append("")
    if foreign_note(sections.get("line", {})):
        sec3.append(foreign_note(sections["line"]))
        sec3.append("")
    sec3.append("The latency is what a client in this process observes: it includes the load generator's own "
                "event loops (101 connections on 2 threads, sharing the cores with the server). The same client "
                "measures both servers, so the ngircd column is the floor this setup can show.")
    sec3.append("")
    summary.append(("Line protocol delivery latency p99 (100 receivers, 1,000 msg/s)", fmt_ms(sb_p99),
                    f"< {LINE_P99_TARGET_MS:g} ms", met(sb_p99 / 1000 if sb_p99 is not None else None, LINE_P99_TARGET_MS, False)))
    ng_p99 = med(lat(ir, "p99_us"))
    summary.append(("… same load on ngircd: p99 (ratio Switchboard / ngircd)",
                    f"{fmt_ms(ng_p99)} ({sb_p99 / ng_p99:.2f} ×)" if sb_p99 and ng_p99 else "n/a", "–", "–"))
    summary.append(("Line protocol delivered msgs/s (ratio to ngircd)",
                    f"{fmt_int(s_tp)} ({tp_ratio})", f"{fmt_int(expected_rate)} offered",
                    met(s_tp, expected_rate * 0.99)))

    sec4 = render_ws(ws or {}, sections, summary)
    sec5 = render_mqtt(mqtt or {}, sections, summary)
    sec6 = render_xmpp(xmpp or {}, sections, summary)
    sec7 = render_sip(sip or {}, summary)

    md.append("## Summary")
    md.append("")
    md.append("| benchmark | measured | target | met? |")
    md.append("|---|---|---|---|")
    for name, value, target, ok in summary:
        md.append(f"| {name} | {value} | {target} | {ok} |")
    md.append("")
    md.extend(sec1)
    md.extend(sec2)
    md.extend(sec3)
    md.extend(sec4)
    md.extend(sec5)
    md.extend(sec6)
    md.extend(sec7)

    notes = Path(__file__).with_name("ANALYSIS.md")
    if notes.exists():
        # Hand-written analysis of the misses (kept beside the script, copied in verbatim).
        md.append(notes.read_text().rstrip())
        md.append("")
    md.append("## How to reproduce")
    md.append("")
    md.append("```sh")
    md.append("make bench        # release build, then Tests/bench/run_bench.py; rewrites docs/BENCHMARKS.md")
    md.append("```")
    md.append("")
    md.append("Or with binaries built elsewhere, e.g. a separate scratch path:")
    md.append("")
    md.append("```sh")
    md.append("swift build -c release --scratch-path .build-release")
    md.append("python3 Tests/bench/run_bench.py --bin .build-release/release/switchboard \\")
    md.append("    --bench-bin .build-release/release/switchboard-bench --out docs/BENCHMARKS.md")
    md.append("```")
    md.append("")
    md.append("`--repeats N` changes the number of runs per figure, `--quick` makes a short smoke run, "
              "`--only fanout,history,line,ws,mqtt,xmpp,sip` runs a subset (`--reuse FILE` renders the others from an earlier `--json` file), `--wait-idle S` waits up to S seconds (default 120) "
              "for other processes to go quiet before starting, `--json FILE` names the file for the raw results (by default they go beside the report: docs/BENCHMARKS.json). Single benchmarks can be run by hand; each prints "
              "one JSON object:")
    md.append("")
    md.append("```sh")
    md.append("switchboard-bench fanout --store memory --rooms 1000 --subscribers 10 --messages 1000000")
    md.append("switchboard-bench history flood --publishers 4 --messages 1000000")
    md.append("switchboard-bench history paced --rate 10000 --seconds 5")
    md.append("switchboard-bench line --port 7777 --protocol line --clients 100 --rate 1000 --seconds 10 \\")
    md.append("    --user-prefix bench --password <pw>        # needs users bench000…bench100")
    md.append("switchboard-bench line --port 6667 --protocol irc --clients 100 --rate 1000 --seconds 10")
    md.append("# WebSocket (needs [websocket] and users bench000…bench099 + benchsnd with the same password):")
    md.append("switchboard-bench ws --port 8080 --clients 10000 --users 100 --rate 1000 --seconds 5 \\")
    md.append("    --password <pw> --source-addresses 4")
    md.append("switchboard-bench ws --port 8080 --clients 10000 --users 100 --saturate --messages 1500 --password <pw>")
    md.append("switchboard-bench ws --port 8080 --line-port 7777 --clients 100 --receivers-via ws --sender-via line --password <pw>")
    md.append("switchboard-bench ws-idle --port 8080 --clients 5000 --password <pw>   # holds them until stdin closes")
    md.append("# MQTT (a broker on 1883; for gateway also [mqtt] enabled against it and user bench000):")
    md.append("switchboard-bench mqtt direct --mqtt-port 1883 --rate 1000 --seconds 5")
    md.append("switchboard-bench mqtt gateway --mqtt-port 1883 --ws-port 8080 --password <pw> --room lobby --out-subscriber --saturate")
    md.append("# XMPP MUC (needs [xmpp] with allow_plain_without_tls, or a Prosody/ejabberd, and users bench000…bench049):")
    md.append("switchboard-bench xmpp --port 5222 --occupants 50 --rate 40 --seconds 6 --password <pw> --server-pid <pid>")
    md.append("switchboard-bench xmpp --port 5222 --occupants 50 --saturate --senders 2 --window 64 --seconds 4 --password <pw>")
    md.append("```")
    md.append("")


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the switchboard binary (release build)")
    ap.add_argument("--bench-bin", required=True, help="the switchboard-bench binary (release build)")
    ap.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"), help="the Markdown report to write")
    ap.add_argument("--ngircd", default=shutil.which("ngircd") or "/usr/sbin/ngircd", help="the ngircd binary")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is reported)")
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    ap.add_argument("--only", default="fanout,history,line,ws,mqtt,xmpp,sip", help="comma-separated subset to run")
    ap.add_argument("--reuse", help="a --json file of an earlier run: sections left out by --only are rendered "
                                    "from its raw results instead of as 'not run'")
    ap.add_argument("--json", help="where to write the raw results as JSON (default: the --out file with a .json "
                                   "suffix, kept beside the report so that a later `--only … --reuse` can re-render "
                                   "the sections it does not measure)")
    ap.add_argument("--wait-idle", type=float, default=120,
                    help="wait up to this many seconds for other processes to go quiet before starting (0: don't)")
    args = ap.parse_args()

    binary = os.path.abspath(args.bin)
    bench_bin = os.path.abspath(args.bench_bin)
    for b in (binary, bench_bin):
        if not os.access(b, os.X_OK):
            print(f"error: {b} is not an executable (build with `swift build -c release`)", file=sys.stderr)
            return 2
    ngircd = args.ngircd if args.ngircd and os.access(args.ngircd, os.X_OK) else None
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    repeats = max(1, args.repeats)

    started = dt.datetime.now(dt.timezone.utc)
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable) if sys.executable.startswith(str(REPO)) else sys.executable,
                                                 os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    machine = machine_info(tempfile.gettempdir())
    log(f"machine: {machine}")
    machine["quiet"] = wait_until_quiet(args.wait_idle)
    log(machine["quiet"])
    accounting = CpuAccounting()

    sections: dict[str, dict] = {}
    acc = CpuAccounting()
    fanout = bench_fanout(bench_bin, repeats, args.quick) if "fanout" in only else []
    sections["fanout"] = acc.report()
    acc = CpuAccounting()
    history = bench_history(bench_bin, repeats, args.quick) if "history" in only else \
        {"raw": [], "flood": [], "flood_client_ids": [], "paced": []}
    sections["history"] = acc.report()
    acc = CpuAccounting()
    line = bench_line(binary, bench_bin, ngircd, repeats, args.quick) if "line" in only else \
        {"seconds": 0, "results": {"line": [], "irc": []}, "notes": ["not run"]}
    sections["line"] = acc.report()
    acc = CpuAccounting()
    ws = bench_ws(binary, bench_bin, repeats, args.quick) if "ws" in only else {}
    sections["ws"] = acc.report()
    acc = CpuAccounting()
    mqtt = bench_mqtt(binary, bench_bin, repeats, args.quick) if "mqtt" in only else {}
    sections["mqtt"] = acc.report()
    acc = CpuAccounting()
    xmpp = bench_xmpp(binary, bench_bin, repeats, args.quick) if "xmpp" in only else {}
    sections["xmpp"] = acc.report()
    acc = CpuAccounting()
    if "sip" in only:
        import sip_bench
        sip = sip_bench.run(binary, args.quick, log)
    else:
        sip = {}
    sections["sip"] = acc.report()
    reused = None
    # Where each section's figures come from: this run, or (reused) the run that measured them.
    provenance: dict[str, dict] = {}
    if args.reuse:
        prev = json.loads(Path(args.reuse).read_text())
        taken = []
        for name in ("fanout", "history", "line", "ws", "mqtt", "xmpp", "sip"):
            if name not in only and prev.get(name):
                taken.append(name)
                sections[name] = prev.get("sections", {}).get(name, {})
                # A file that was itself partly reused knows which run measured each section.
                provenance[name] = prev.get("provenance", {}).get(name) or {
                    "started": prev.get("started", "?"), "command": prev.get("command", "?"),
                    "foreign_cpu": prev.get("machine", {}).get("foreign_cpu", "?")}
        fanout = prev["fanout"] if "fanout" in taken else fanout
        history = prev["history"] if "history" in taken else history
        line = prev["line"] if "line" in taken else line
        ws = prev["ws"] if "ws" in taken else ws
        mqtt = prev["mqtt"] if "mqtt" in taken else mqtt
        xmpp = prev["xmpp"] if "xmpp" in taken else xmpp
        sip = prev["sip"] if "sip" in taken else sip
        if taken:
            runs: dict[tuple, list[str]] = {}
            for name in taken:
                p = provenance[name]
                runs.setdefault((p["started"], p["command"], p["foreign_cpu"]), []).append(name)
            earlier = "; ".join(
                f"sections {', '.join(names)} from the run started {started_at} (command `{cmd}`, machine load "
                f"then: {foreign})" for (started_at, cmd, foreign), names in runs.items())
            reused = (f"Re-rendered from the raw results of earlier runs: {earlier}. Only {', '.join(sorted(only))} "
                      "was measured by the command above.")
    finished = dt.datetime.now(dt.timezone.utc)
    try:
        machine["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        machine["loadavg_end"] = "unknown"
    cpu = accounting.report()
    if args.reuse and not (only & {"fanout", "history", "line", "ws", "mqtt", "xmpp", "sip"}):
        # Nothing measured: the machine's state during the measurements is the earlier run's.
        prev_machine = json.loads(Path(args.reuse).read_text()).get("machine", {})
        for key in ("loadavg", "loadavg_end", "foreign_cpu"):
            if key in prev_machine:
                machine[key] = prev_machine[key]
        cpu = {}
    if "foreign_share" in cpu:
        machine["foreign_cpu"] = (f"{cpu['foreign_core_seconds']} core-seconds "
                                  f"({cpu['foreign_share'] * 100:.1f} % of the machine over {cpu['wall_seconds']} s); "
                                  f"hypervisor steal {cpu['steal_share'] * 100:.1f} %")
    for name in ("fanout", "history", "line", "ws", "mqtt", "xmpp", "sip"):
        if name in only:
            provenance[name] = {"started": started.isoformat(), "command": command,
                                "foreign_cpu": machine.get("foreign_cpu", "?")}
    log(f"cpu accounting: {cpu}")

    md: list[str] = []
    render(md, machine, command, started, finished, fanout, history, line, repeats, args.quick, sections, ws, mqtt,
           reused, xmpp, sip)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    log(f"wrote {out}")
    raw = Path(args.json) if args.json else out.with_suffix(".json")
    if raw.resolve() != out.resolve():
        raw.write_text(json.dumps({"machine": machine, "command": command, "started": started.isoformat(),
                                   "fanout": fanout, "history": history, "line": line, "ws": ws, "mqtt": mqtt,
                                   "xmpp": xmpp, "sip": sip, "sections": sections, "provenance": provenance,
                                   "finished": finished.isoformat()}, indent=1))
        log(f"wrote {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

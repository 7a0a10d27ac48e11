"""SIP benchmark (section 7 of docs/BENCHMARKS.md): Switchboard against Kamailio.

The same sipp scenarios (Tests/sip/scenarios/bench_register.xml, bench_message.xml,
uas_message.xml) drive both servers, one after the other, on loopback:

* authenticated REGISTER (REGISTER -> 401 -> REGISTER with Authorization -> 200) at
  saturation and paced at 1,000/s;
* relayed MESSAGE (alice's sipp -> server -> bob's sipp answering 200) at saturation and
  paced at 1,000/s.

Per run: completed calls/s, sipp's response-time distribution (p50/p99: the time from the first
request of a call to its final 200, so two round trips for a REGISTER), and server CPU
(utime+stime from /proc of every server process) per SIP transaction. A registration is two
transactions (the challenged REGISTER and the authenticated one); a relayed MESSAGE is two
(sender -> server, server -> recipient), for both servers.

Used by run_bench.py (`--only sip`); runnable alone:
    python3 Tests/bench/sip_bench.py --bin .build/release/switchboard [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Tests" / "integration"))

import sip_helpers  # noqa: E402
from sip_helpers import Kamailio, csv_line, free_port_pair, free_udp_port, register_from_port  # noqa: E402

SCENARIOS = REPO / "Tests" / "sip" / "scenarios"
USERS = 100                      # u0000 … u0099 for the REGISTER load
PACED_RATE = 1000                # calls per second for the latency runs
KAMAILIO_REGISTER_PER_S = 6000   # the brief's measurement, for the targets
KAMAILIO_MESSAGE_PER_S = 8000


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return pids


TICK = os.sysconf("SC_CLK_TCK")


class SwitchboardSIP:
    """`switchboard serve` with SIP on a free port, users created with the CLI."""

    def __init__(self, binary: str, tmp: Path, users: dict[str, str]):
        self.binary = binary
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port_pair()
        self.domain = "localhost"
        data = tmp / "data"
        cfg = tmp / "switchboard.toml"
        cfg.write_text(f"""
[server]
domain = "localhost"
data_dir = "{data}"
[log]
level = "warning"
[accounts]
pbkdf2_iterations = 4096
[line]
enabled = true
port = {free_port_pair()}
[websocket]
enabled = false
[xmpp]
enabled = false
[mqtt]
enabled = false
[sip]
enabled = true
bind = "127.0.0.1"
port = {self.port}
digest_algorithms = ["MD5"]
rate_per_second = 1000000
rate_burst = 1000000
delivery_window = 256
""")
        self.cfg = cfg
        env = dict(os.environ)
        for name, password in users.items():
            subprocess.run([binary, "user", "add", name, "--password-stdin", "--config", str(cfg)],
                           input=password.encode(), check=True, stdout=subprocess.DEVNULL, env=env)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SwitchboardSIP":
        self.log = open(self.tmp / "switchboard.log", "wb")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", str(self.cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with sip_helpers.SIPClient(self.port, timeout=0.5) as c:
                    data, _, cseq = c.build("OPTIONS", f"sip:{self.domain}")
                    c.send_raw(data)
                    if c.expect_response(cseq=cseq, timeout=0.5).status == 200:
                        return self
            except AssertionError:
                time.sleep(0.1)
        raise RuntimeError("switchboard did not answer OPTIONS")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class KamailioPeer:
    # tm keeps every transaction in shared memory until its wait timer ends (~5 s after the
    # final reply), so thousands of MESSAGEs a second need far more than the tests' 64 MB:
    # with 64 MB Kamailio answered 500 (out of shm) to most of a saturating run.
    SHM_MB = 1024

    def __init__(self, tmp: Path, users: dict[str, str]):
        self.k = Kamailio(tmp, users, shm_mb=self.SHM_MB)
        self.port = self.k.port

    def start(self) -> "KamailioPeer":
        self.k.start()
        return self

    def pids(self) -> list[int]:
        return group_pids(self.k.proc.pid) if self.k.proc else []

    def stop(self) -> None:
        self.k.stop()


def sipp(workdir: Path, scenario: str, server_port: int, *, port: int, csv: Path | None, calls: int, rate: int,
         limit: int, timeout_s: int, extra: list[str] | None = None) -> subprocess.Popen:
    args = ["sipp", "-sf", str(SCENARIOS / scenario), f"127.0.0.1:{server_port}", "-i", "127.0.0.1",
            "-p", str(port), "-mi", "127.0.0.1", "-mp", str(free_udp_port()), "-t", "u1", "-nostdin",
            "-auth_uri", "localhost", "-m", str(calls), "-r", str(rate), "-l", str(limit),
            "-timeout", f"{timeout_s}s", "-max_recv_loops", "1000", "-max_sched_loops", "1000",
            # sipp's own socket buffers default to 64 KiB: a burst of answers overflows them
            # (dropped by the kernel, retransmitted 500 ms later) whenever sipp is descheduled.
            "-buff_size", "4194304",
            "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1",
            "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", str(workdir / "errors.log")]
    if csv:
        args += ["-inf", str(csv)]
    args += extra or []
    workdir.mkdir(parents=True, exist_ok=True)
    out = open(workdir / "stdout.log", "wb")
    return subprocess.Popen(args, cwd=str(workdir), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def sipp_stats(workdir: Path) -> dict:
    """Successful/failed calls from the last row of sipp's stat file, response times from its rtt file."""
    out = {"successful": 0, "failed": 0, "p50_ms": None, "p99_ms": None}
    stat = workdir / "stat.csv"
    if stat.exists():
        rows = [r for r in stat.read_text(errors="replace").splitlines() if r.strip()]
        if len(rows) >= 2:
            head = rows[0].split(";")
            last = rows[-1].split(";")
            col = {name: i for i, name in enumerate(head)}
            for key, name in (("successful", "SuccessfulCall(C)"), ("failed", "FailedCall(C)")):
                if name in col and col[name] < len(last):
                    try:
                        out[key] = int(last[col[name]])
                    except ValueError:
                        pass
    times = []
    for rtt in workdir.glob("*_rtt.csv"):
        for line in rtt.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    times.append(float(parts[1]))
                except ValueError:
                    pass
    if times:
        times.sort()
        out["p50_ms"] = round(times[len(times) // 2], 3)
        out["p99_ms"] = round(times[min(len(times) - 1, int(len(times) * 0.99))], 3)
        out["samples"] = len(times)
    return out


def measure(server, workdir: Path, scenario: str, *, port: int, csv: Path, calls: int, rate: int, limit: int,
            timeout_s: int) -> dict:
    pids = server.pids()
    before = cpu_ticks(pids)
    start = time.monotonic()
    proc = sipp(workdir, scenario, server.port, port=port, csv=csv, calls=calls, rate=rate, limit=limit,
                timeout_s=timeout_s)
    try:
        proc.wait(timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    elapsed = time.monotonic() - start
    cpu_s = (cpu_ticks(pids) - before) / TICK
    stats = sipp_stats(workdir)
    stats["elapsed_s"] = round(elapsed, 3)
    stats["calls_per_s"] = round(stats["successful"] / elapsed, 1) if elapsed > 0 else 0
    stats["server_cpu_s"] = round(cpu_s, 3)
    stats["cpu_us_per_transaction"] = round(cpu_s * 1e6 / (2 * stats["successful"]), 1) if stats["successful"] else None
    stats["exit"] = proc.returncode
    return stats


PHASES = ("register_saturation", "register_paced", "message_saturation", "message_paced")


class Rig:
    """One server under test with its users, its warm caches and bob's answering UA."""

    def __init__(self, kind: str, make_server, tmp: Path, quick: bool):
        self.kind, self.tmp = kind, tmp
        tmp.mkdir(parents=True, exist_ok=True)
        users = {f"u{i:04d}": f"pw-u{i:04d}" for i in range(USERS)}
        users.update({"alice": "alice-pw", "bob": "bob-pw"})
        self.server = make_server(tmp, users).start()
        self.bob = None
        self.csv = tmp / "users.csv"
        self.csv.write_text("SEQUENTIAL\n" + "\n".join(
            csv_line(u, p, target="bob", expires=3600) for u, p in users.items() if u.startswith("u")) + "\n")
        self.alice_csv = tmp / "alice.csv"
        self.alice_csv.write_text("SEQUENTIAL\n" + csv_line("alice", "alice-pw", target="bob", body="bench message") + "\n")
        self.sat_calls = 4000 if quick else 20000
        self.paced_calls = 3000 if quick else 10000
        # Warm up (credential caches, JIT-less but page-faulted paths).
        measure(self.server, tmp / "warm", "bench_register.xml", port=free_port_pair(), csv=self.csv, calls=500,
                rate=500, limit=100, timeout_s=30)
        # bob: a sipp UAS answering every MESSAGE 200, registered from its own socket first.
        bob_port = free_port_pair()
        register_from_port(self.server.port, "bob", "bob-pw", bob_port, domain="localhost")
        self.alice_port = free_port_pair()
        register_from_port(self.server.port, "alice", "alice-pw", self.alice_port, domain="localhost")
        self.bob_dir = tmp / "bob"
        self.bob_dir.mkdir()
        self.bob = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_message.xml"), "-i", "127.0.0.1",
                                     "-p", str(bob_port), "-mi", "127.0.0.1", "-mp", str(free_udp_port()),
                                     "-t", "u1", "-nostdin", "-max_recv_loops", "1000", "-timeout", "3600s",
                                     "-buff_size", "4194304",
                                     "-trace_stat", "-stf", str(self.bob_dir / "stat.csv"), "-fd", "1"],
                                    cwd=str(self.bob_dir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def run(self, phase: str, rep: int) -> dict:
        d = self.tmp / f"{phase}-{rep}"
        if phase == "register_saturation":
            return measure(self.server, d, "bench_register.xml", port=free_port_pair(), csv=self.csv,
                           calls=self.sat_calls, rate=100000, limit=200, timeout_s=120)
        if phase == "register_paced":
            return measure(self.server, d, "bench_register.xml", port=free_port_pair(), csv=self.csv,
                           calls=self.paced_calls, rate=PACED_RATE, limit=1000, timeout_s=120)
        if phase == "message_saturation":
            return measure(self.server, d, "bench_message.xml", port=self.alice_port, csv=self.alice_csv,
                           calls=self.sat_calls, rate=100000, limit=200, timeout_s=120)
        return measure(self.server, d, "bench_message.xml", port=self.alice_port, csv=self.alice_csv,
                       calls=self.paced_calls, rate=PACED_RATE, limit=1000, timeout_s=120)

    def close(self) -> int:
        """Stops bob's UA and the server; returns how many MESSAGEs bob answered."""
        received = 0
        if self.bob:
            time.sleep(1.0)
            self.bob.terminate()
            try:
                self.bob.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.bob.kill()
            received = sipp_stats(self.bob_dir)["successful"]
        self.server.stop()
        return received


def combine(runs: list[dict]) -> dict:
    """The median of each figure over interleaved runs; calls summed; the runs kept."""
    out: dict = {"runs": runs}
    for field in ("calls_per_s", "cpu_us_per_transaction", "p50_ms", "p99_ms", "elapsed_s", "server_cpu_s"):
        values = sorted(r[field] for r in runs if r.get(field) is not None)
        out[field] = values[len(values) // 2] if values else None
        if len(values) > 1:
            out[field + "_range"] = [values[0], values[-1]]
    for field in ("successful", "failed"):
        out[field] = sum(r.get(field) or 0 for r in runs)
    return out


def run(binary: str, quick: bool = False, log=print) -> dict:
    for tool in ("sipp", "kamailio"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is not installed (make bench-deps installs sip-tester and kamailio)")
    reps = 1 if quick else 3
    out: dict = {"quick": quick, "users": USERS, "paced_rate": PACED_RATE, "repeats": reps}
    with tempfile.TemporaryDirectory(prefix="swb-sip-bench-") as d:
        tmp = Path(d)
        # Both servers stay up for the whole section and take turns, phase by phase (the order
        # alternating between repeats), so a VM that slows down or speeds up for a minute
        # affects both sides of a ratio alike.
        rigs: dict[str, Rig] = {}
        try:
            log("SIP: starting Switchboard and Kamailio")
            rigs["switchboard"] = Rig("switchboard", lambda t, u: SwitchboardSIP(binary, t, u), tmp / "sb", quick)
            rigs["kamailio"] = Rig("kamailio", lambda t, u: KamailioPeer(t, u), tmp / "k", quick)
            runs: dict[str, dict[str, list]] = {kind: {phase: [] for phase in PHASES} for kind in rigs}
            for phase in PHASES:
                for rep in range(reps):
                    order = ["switchboard", "kamailio"] if rep % 2 == 0 else ["kamailio", "switchboard"]
                    for kind in order:
                        log(f"  {kind}: {phase.replace('_', ' ')} (repeat {rep + 1} of {reps})")
                        runs[kind][phase].append(rigs[kind].run(phase, rep))
            for kind in rigs:
                out[kind] = {phase: combine(runs[kind][phase]) for phase in PHASES}
        finally:
            for kind, rig in rigs.items():
                received = rig.close()
                if kind in out:
                    out[kind]["bob_received"] = received
    return out


def render(result: dict) -> str:
    sb, k = result["switchboard"], result["kamailio"]

    def ratio(a, b):
        return f"{a / b:.2f}×" if a and b else "—"

    def row(name, key, field, unit=""):
        a, b = sb[key].get(field), k[key].get(field)
        return f"| {name} | {a if a is not None else '—'}{unit} | {b if b is not None else '—'}{unit} | {ratio(a, b)} |"

    lines = [
        f"Median of {result.get('repeats', 1)} runs per server and measure, the two servers taking turns "
        "(ranges in the JSON file).",
        "",
        "| measure | Switchboard | Kamailio | Switchboard / Kamailio |",
        "|---|---|---|---|",
        row("authenticated REGISTER/s at saturation", "register_saturation", "calls_per_s"),
        row("server CPU µs per REGISTER transaction (saturation)", "register_saturation", "cpu_us_per_transaction"),
        row(f"REGISTER call p50 at {result['paced_rate']}/s (ms, 2 round trips)", "register_paced", "p50_ms"),
        row(f"REGISTER call p99 at {result['paced_rate']}/s (ms)", "register_paced", "p99_ms"),
        row(f"server CPU µs per REGISTER transaction at {result['paced_rate']}/s", "register_paced", "cpu_us_per_transaction"),
        row("relayed MESSAGE/s at saturation", "message_saturation", "calls_per_s"),
        row("server CPU µs per MESSAGE transaction (saturation)", "message_saturation", "cpu_us_per_transaction"),
        row(f"MESSAGE p50 at {result['paced_rate']}/s (ms)", "message_paced", "p50_ms"),
        row(f"MESSAGE p99 at {result['paced_rate']}/s (ms)", "message_paced", "p99_ms"),
        row(f"server CPU µs per MESSAGE transaction at {result['paced_rate']}/s", "message_paced", "cpu_us_per_transaction"),
        "",
        f"Failed calls: Switchboard {sum(sb[k2].get('failed', 0) for k2 in sb if isinstance(sb[k2], dict))}, "
        f"Kamailio {sum(k[k2].get('failed', 0) for k2 in k if isinstance(k[k2], dict))}; "
        f"MESSAGEs bob's UA answered: Switchboard {sb.get('bob_received')}, Kamailio {k.get('bob_received')}.",
    ]
    def clean(key):
        runs = (sb[key], k[key])
        return all((r.get("failed") or 0) <= 0.01 * ((r.get("successful") or 0) + (r.get("failed") or 0)) for r in runs)

    def state(ok, key):
        return ("met" if ok else "missed") if clean(key) else "not comparable (a server lost calls in this run)"

    reg_ok = (sb["register_saturation"].get("calls_per_s") or 0) >= (k["register_saturation"].get("calls_per_s") or 1)
    msg_ok = (sb["message_saturation"].get("calls_per_s") or 0) >= (k["message_saturation"].get("calls_per_s") or 1)
    reg_cpu = (sb["register_saturation"].get("cpu_us_per_transaction") or 1e9) <= (k["register_saturation"].get("cpu_us_per_transaction") or 0)
    msg_cpu = (sb["message_saturation"].get("cpu_us_per_transaction") or 1e9) <= (k["message_saturation"].get("cpu_us_per_transaction") or 0)
    lines += ["", "Target (at least Kamailio's throughput and CPU per transaction): "
              f"REGISTER/s {state(reg_ok, 'register_saturation')}, CPU per REGISTER transaction "
              f"{state(reg_cpu, 'register_saturation')}; relayed MESSAGE/s {state(msg_ok, 'message_saturation')}, "
              f"CPU per MESSAGE transaction {state(msg_cpu, 'message_saturation')}."]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    res = run(a.bin, a.quick)
    print(render(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))

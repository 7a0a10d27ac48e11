#!/usr/bin/env bash
# with-mosquitto.sh [--config FILE] -- COMMAND [ARGS...]
#
# Runs COMMAND with an MQTT broker available for Switchboard's MQTT bridge:
#   * when MQTT is enabled — SWITCHBOARD_MQTT_ENABLED if set, else `[mqtt] enabled` in the
#     config file (default conf/switchboard.toml, or $SWITCHBOARD_CONFIG) — and nothing answers
#     at mqtt.host:mqtt.port (SWITCHBOARD_MQTT_HOST / SWITCHBOARD_MQTT_PORT override the file),
#     it starts `mosquitto -c conf/mosquitto.conf` in the background (installing Debian's
#     mosquitto and mosquitto-clients with apt-get when missing), runs COMMAND, and stops that
#     broker when COMMAND ends or the script is interrupted;
#   * otherwise (MQTT off, or a broker already answers) it just runs COMMAND.
# The exit status is COMMAND's. `make run` goes through this script.
#
# Environment: MOSQUITTO_CONF (default conf/mosquitto.conf, whose listener must match
# mqtt.port), MOSQUITTO_LOG (default data/mosquitto.log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="${SWITCHBOARD_CONFIG:-conf/switchboard.toml}"
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config="$2"; shift 2 ;;
        --config=*) config="${1#--config=}"; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--config FILE] -- COMMAND [ARGS...]" >&2; exit 2; }

mosquitto_conf="${MOSQUITTO_CONF:-$here/conf/mosquitto.conf}"
mosquitto_log="${MOSQUITTO_LOG:-data/mosquitto.log}"

# One key of the [mqtt] section of a flat TOML file (as conf/switchboard.toml is written):
# strips comments, quotes and spaces. Empty when absent.
mqtt_key() {
    [ -f "$config" ] || return 0
    awk -v key="$1" '
        /^[[:space:]]*\[/ { section = $0; gsub(/[][[:space:]]/, "", section); sub(/#.*/, "", section); next }
        section == "mqtt" {
            line = $0; sub(/#.*/, "", line)
            n = index(line, "=")
            if (n == 0) next
            k = substr(line, 1, n - 1); v = substr(line, n + 1)
            gsub(/[[:space:]]/, "", k)
            if (k != key) next
            gsub(/^[[:space:]]+|[[:space:]]+$/, "", v); gsub(/^"|"$/, "", v)
            print v; exit
        }' "$config"
}

enabled="${SWITCHBOARD_MQTT_ENABLED:-$(mqtt_key enabled)}"
host="${SWITCHBOARD_MQTT_HOST:-$(mqtt_key host)}"
port="${SWITCHBOARD_MQTT_PORT:-$(mqtt_key port)}"
host="${host:-127.0.0.1}"
port="${port:-1883}"

case "$(printf '%s' "$enabled" | tr 'A-Z' 'a-z')" in
    true|1|yes|on) ;;
    *) exec "$@" ;;
esac

answers() {  # is something listening at host:port?
    if command -v nc >/dev/null 2>&1; then
        nc -z -w 1 "$host" "$port" >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/$host/$port") >/dev/null 2>&1
    fi
}

if answers; then
    echo "with-mosquitto: an MQTT broker answers at $host:$port; using it" >&2
    exec "$@"
fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "with-mosquitto: installing Debian packages: mosquitto mosquitto-clients" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq mosquitto mosquitto-clients
fi
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

case "$host" in
    127.0.0.1|localhost|::1) ;;
    *) echo "with-mosquitto: warning: mqtt.host is $host, but $mosquitto_conf listens on loopback" >&2 ;;
esac
if ! grep -Eq "^[[:space:]]*listener[[:space:]]+$port([[:space:]]|\$)" "$mosquitto_conf"; then
    echo "with-mosquitto: warning: mqtt.port is $port but $mosquitto_conf has no 'listener $port'" >&2
fi

mkdir -p "$(dirname "$mosquitto_log")"
echo "with-mosquitto: starting $mosquitto_bin -c $mosquitto_conf (log: $mosquitto_log)" >&2
"$mosquitto_bin" -c "$mosquitto_conf" >>"$mosquitto_log" 2>&1 &
broker_pid=$!

stop_broker() {
    if [ -n "${broker_pid:-}" ] && kill -0 "$broker_pid" 2>/dev/null; then
        echo "with-mosquitto: stopping mosquitto (pid $broker_pid)" >&2
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=""
}
trap stop_broker EXIT
trap 'stop_broker; exit 130' INT
trap 'stop_broker; exit 143' TERM

for _ in $(seq 1 100); do
    answers && break
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        echo "with-mosquitto: mosquitto exited at start; its log:" >&2
        tail -n 20 "$mosquitto_log" >&2
        exit 1
    fi
    sleep 0.1
done
answers || { echo "with-mosquitto: mosquitto does not answer at $host:$port" >&2; exit 1; }

# Run the command as a child (not exec), so the traps can stop the broker afterwards;
# forward INT/TERM to it so the gateway shuts down gracefully first.
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; stop_broker; exit 143' TERM
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; stop_broker; exit 130' INT
set +e
wait "$child"
status=$?
set -e
exit "$status"

# Switchboard: the two commands (`make run`, `make test`) and the benchmark (`make bench`).
# Each installs the Debian packages it needs when they are missing (run as root, or with sudo).

SWIFT        ?= swift
CONFIG       ?= conf/switchboard.toml
VENV         := .build/venv
PYTHON       := $(VENV)/bin/python3
BUILD_DEBS   := libsqlite3-dev libmosquitto-dev libssl-dev libxml2-dev pkg-config
TEST_DEBS    := python3 python3-venv netcat-openbsd chromium chromium-driver mosquitto mosquitto-clients sendxmpp sip-tester baresip
BENCH_DEBS   := ngircd prosody ejabberd sip-tester kamailio

APT_INSTALL = missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq $$missing; \
	fi

.PHONY: run test bench fuzz build deps test-deps bench-deps clean

deps:
	@$(call APT_INSTALL,$(BUILD_DEBS))

test-deps: deps
	@$(call APT_INSTALL,$(TEST_DEBS))
	@[ -x $(PYTHON) ] || python3 -m venv $(VENV)
	@$(PYTHON) -m pip install -q --disable-pip-version-check -r Tests/integration/requirements.txt

## The XMPP benchmark runs Prosody and ejabberd as private processes (Tests/bench/peers/); the system
## services their packages start on installation are stopped and disabled so nothing else serves 5222.
bench-deps: test-deps
	@fresh=""; for p in prosody ejabberd; do dpkg -s $$p >/dev/null 2>&1 || fresh="$$fresh $$p"; done; \
	$(call APT_INSTALL,$(BENCH_DEBS)) || exit 1; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	for s in $$fresh; do \
		if [ -d /run/systemd/system ]; then $$SUDO systemctl disable --now $$s >/dev/null 2>&1 || true; \
		else $$SUDO service $$s stop >/dev/null 2>&1 || true; $$SUDO update-rc.d $$s disable >/dev/null 2>&1 || true; fi; \
	done

## make run: build in release mode and start the gateway with conf/switchboard.toml, data under data/.
## With [mqtt] enabled and no broker at mqtt.host:mqtt.port, scripts/with-mosquitto.sh starts a local
## Mosquitto with conf/mosquitto.conf (installing Debian's mosquitto if missing) and stops it afterwards.
run: deps
	$(SWIFT) build -c release --product switchboard
	mkdir -p data
	scripts/with-mosquitto.sh --config $(CONFIG) -- ./.build/release/switchboard serve --config $(CONFIG)

## make test: unit tests (swift test), then integration tests against the built binary (pytest).
## MQTT tests start their own Mosquitto per test (Tests/integration/mqtt_helpers.py): no global broker.
test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	SWITCHBOARD_BIN=$(CURDIR)/.build/debug/switchboard $(PYTHON) -m pytest -q Tests/integration

## make bench: release build, then the benchmarks; results go to docs/BENCHMARKS.md.
bench: bench-deps
	$(SWIFT) build -c release
	$(PYTHON) Tests/bench/run_bench.py --bin .build/release/switchboard --bench-bin .build/release/switchboard-bench --out docs/BENCHMARKS.md

## make fuzz: libFuzzer + AddressSanitizer on the XML, SIP and line parsers, FUZZ_SECONDS (60) each;
## crashing inputs are kept under .build/fuzz/<target>/ (scripts/fuzz.sh).
fuzz: deps
	scripts/fuzz.sh

build: deps
	$(SWIFT) build

clean:
	rm -rf .build data

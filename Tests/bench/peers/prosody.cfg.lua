-- A private Prosody for the XMPP MUC fan-out benchmark (Tests/bench/run_bench.py, section 6).
-- run_bench.py fills in the placeholders dir, port and domain (Python string.Template) and runs `prosody -F --config <this>`
-- from a temp dir; nothing here touches /etc/prosody or /var/lib/prosody.

pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { { levels = { min = "error" }, to = "file", filename = "$dir/prosody.log" } }
statistics = nil

-- Loopback only, one c2s port; no s2s, no HTTP, no admin socket.
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $port }
c2s_interfaces = { "127.0.0.1" }
modules_disabled = { "s2s", "s2s_auth_certs", "offline" }

-- Plain streams with SASL PLAIN (the same as Switchboard's allow_plain_without_tls).
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"   -- accounts are data/<host>/accounts/<user>.dat, written by run_bench.py
storage = "internal"

-- No rate limits: mod_limits is not loaded (Debian's default config limits c2s to 10 kB/s).
modules_enabled = {
	"saslauth";
	"disco";
	"ping";
}
c2s_stanza_size_limit = 1024 * 1024
c2s_timeout = 600

VirtualHost "$domain"

Component "conference.$domain" "muc"
	restrict_room_creation = false
	muc_room_locking = false             -- a room made by a join is usable at once
	muc_room_default_public = true
	muc_room_default_persistent = false
	muc_room_default_history_length = 20
	muc_max_occupants = 100000

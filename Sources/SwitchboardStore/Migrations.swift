import GRDB

/// The schema, as an ordered list of GRDB migrations.
///
/// Constraints live here, in SQL, so a row that breaks them is refused by the
/// database whichever process wrote it. A shipped migration never changes:
/// a later schema change is a new migration appended to the list.
enum Migrations {
    /// Every migration, in order.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-rooms-envelopes-accounts") { db in
            try db.execute(sql: v1)
        }
        migrator.registerMigration("v2-sip-bindings-memberships") { db in
            try db.execute(sql: v2)
        }
        return migrator
    }

    /// SIP state that survives a restart: registrar bindings and room memberships with the
    /// seq delivered so far (the rest of a member's messages are read back from `envelopes`).
    static let v2 = """
        CREATE TABLE sip_bindings (
            user TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
            contact TEXT NOT NULL CHECK (length(contact) BETWEEN 1 AND 1024),
            source TEXT NOT NULL CHECK (length(source) BETWEEN 1 AND 256),
            call_id TEXT NOT NULL CHECK (length(call_id) BETWEEN 1 AND 256),
            cseq INTEGER NOT NULL CHECK (cseq >= 0),
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (user, contact)
        ) WITHOUT ROWID;

        CREATE TABLE sip_memberships (
            user TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
            room TEXT NOT NULL CHECK (length(room) BETWEEN 1 AND 140),
            delivered_seq INTEGER NOT NULL DEFAULT 0 CHECK (delivered_seq >= 0),
            PRIMARY KEY (user, room)
        ) WITHOUT ROWID;
        """

    /// The first schema: rooms, their envelopes, accounts.
    ///
    /// * `rooms.last_seq` is the highest seq ever committed in the room; it survives
    ///   retention so sequences never restart.
    /// * `envelopes` is keyed by `(room, seq)` without a rowid; `attrs` is a compact
    ///   JSON object, or NULL when there are none.
    /// * `accounts` hold derived keys only (SCRAM and SIP digest), never a password.
    ///
    /// In a GLOB character class a trailing `-` is a literal, so `[^a-z0-9._-]`
    /// matches any character outside the allowed set.
    ///
    /// `via` and `kind` are checked with chains of `=` rather than `IN (…)`: SQLite
    /// builds a temporary index for an `IN` list each time it runs the INSERT, which
    /// made every envelope insert about 40% slower (measured with SQLite 3.40).
    static let v1 = """
        CREATE TABLE rooms (
            name TEXT PRIMARY KEY
                CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^a-z0-9._-]*'),
            created_at INTEGER NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
        );

        CREATE TABLE envelopes (
            room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
            seq INTEGER NOT NULL CHECK (seq > 0),
            id TEXT NOT NULL,
            ts INTEGER NOT NULL,
            user TEXT NOT NULL,
            display TEXT,
            via TEXT NOT NULL
                CHECK (via = 'ws' OR via = 'rest' OR via = 'mqtt' OR via = 'xmpp' OR via = 'sip'
                       OR via = 'line' OR via = 'system'),
            kind TEXT NOT NULL
                CHECK (kind = 'chat' OR kind = 'join' OR kind = 'leave' OR kind = 'presence' OR kind = 'typing'
                       OR kind = 'receipt' OR kind = 'reaction' OR kind = 'edit' OR kind = 'retract'
                       OR kind = 'call' OR kind = 'system'),
            body TEXT NOT NULL,
            attrs TEXT CHECK (attrs IS NULL OR json_type(attrs) = 'object'),
            client_id TEXT,
            PRIMARY KEY (room, seq)
        ) WITHOUT ROWID;

        -- Only rows with a client_id are indexed by time (to rebuild the dedup window at
        -- start): a full index on ts cost ~15% of every insert. Age retention walks each
        -- room in seq order instead, which is time order.
        CREATE INDEX envelopes_client_ts ON envelopes(ts) WHERE client_id IS NOT NULL;
        CREATE UNIQUE INDEX envelopes_id ON envelopes(id);

        CREATE TABLE accounts (
            name TEXT PRIMARY KEY
                CHECK (length(name) BETWEEN 1 AND 32 AND name NOT GLOB '*[^a-z0-9_-]*'),
            created_at INTEGER NOT NULL,
            salt BLOB NOT NULL,
            iterations INTEGER NOT NULL CHECK (iterations >= 4096),
            scram_sha1_stored_key BLOB NOT NULL,
            scram_sha1_server_key BLOB NOT NULL,
            scram_sha256_stored_key BLOB NOT NULL,
            scram_sha256_server_key BLOB NOT NULL,
            digest_realm TEXT NOT NULL,
            digest_ha1_md5 TEXT NOT NULL,
            digest_ha1_sha256 TEXT NOT NULL
        );
        """
}

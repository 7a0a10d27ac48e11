import Foundation
import GRDB
import SwitchboardCore

extension SQLiteStore {
    /// The columns ``RowDecoder/credentials(_:)`` reads, in order.
    private static let credentialColumns = """
        name, salt, iterations, scram_sha1_stored_key, scram_sha1_server_key, \
        scram_sha256_stored_key, scram_sha256_server_key, digest_realm, digest_ha1_md5, digest_ha1_sha256
        """

    /// The stored credentials of `user`, or nil when there is no such account.
    public func credentials(for user: UserName) async throws -> StoredCredentials? {
        let name = user.rawValue
        return try await pool.read { db in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT \(Self.credentialColumns) FROM accounts WHERE name = ?", arguments: [name])
            else { return nil }
            return try RowDecoder.credentials(row)
        }
    }

    /// Adds an account; throws ``SwitchboardError`` `user_exists` when the name is taken.
    public func createAccount(_ credentials: StoredCredentials, now: Int64) async throws {
        let name = credentials.user.rawValue
        var arguments = Self.arguments(credentials)
        arguments += [now]
        let frozen = arguments
        try await pool.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE name = ?", arguments: [name]) == true {
                throw SwitchboardError("user_exists", "user \(name) already exists")
            }
            try db.execute(sql: """
                INSERT INTO accounts(\(Self.credentialColumns), created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: frozen)
        }
    }

    /// Replaces every credential of an existing account (a new password, or a new realm);
    /// false when there is no such account.
    public func updateCredentials(_ credentials: StoredCredentials) async throws -> Bool {
        var arguments = Self.arguments(credentials)
        arguments += [credentials.user.rawValue]
        let frozen = arguments
        return try await pool.write { db in
            try db.execute(sql: """
                UPDATE accounts SET name = ?, salt = ?, iterations = ?,
                    scram_sha1_stored_key = ?, scram_sha1_server_key = ?,
                    scram_sha256_stored_key = ?, scram_sha256_server_key = ?,
                    digest_realm = ?, digest_ha1_md5 = ?, digest_ha1_sha256 = ?
                WHERE name = ?
                """, arguments: frozen)
            return db.changesCount > 0
        }
    }

    /// Removes an account; false when there was none.
    public func deleteAccount(_ user: UserName) async throws -> Bool {
        let name = user.rawValue
        return try await pool.write { db in
            try db.execute(sql: "DELETE FROM accounts WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    /// Every account name with its creation time (ms), sorted by name.
    public func listAccounts() async throws -> [(user: UserName, createdAt: Int64)] {
        try await pool.read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT name, created_at FROM accounts ORDER BY name")
            var accounts: [(user: UserName, createdAt: Int64)] = []
            while let row = try rows.next() {
                let user = try RowDecoder.user(row, 0)
                accounts.append((user, try row.decode(Int64.self, atIndex: 1)))
            }
            return accounts
        }
    }

    /// The values of ``credentialColumns``, in order.
    private static func arguments(_ credentials: StoredCredentials) -> StatementArguments {
        [
            credentials.user.rawValue,
            Data(credentials.salt),
            credentials.iterations,
            Data(credentials.scramSHA1.storedKey),
            Data(credentials.scramSHA1.serverKey),
            Data(credentials.scramSHA256.storedKey),
            Data(credentials.scramSHA256.serverKey),
            credentials.digestRealm,
            credentials.digestHA1MD5,
            credentials.digestHA1SHA256,
        ]
    }
}

import Foundation
import GRDB
import SwitchboardCore

/// Turns database rows back into validated values. A row that does not decode throws a
/// ``SwitchboardError`` `storage_corrupt` naming the table, the row and the column,
/// never traps: the file may have been written by another version or another tool.
enum RowDecoder {
    /// The code of every decoding failure.
    static let corrupt: SwitchboardError.Code = "storage_corrupt"

    /// Runs `sql` and decodes every row as an envelope, in the order the query returns them.
    static func envelopes(_ db: Database, sql: String, arguments: StatementArguments) throws -> [Envelope] {
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        var envelopes: [Envelope] = []
        while let row = try rows.next() {
            envelopes.append(try envelope(row))
        }
        return envelopes
    }

    /// Decodes the columns `room, seq, id, ts, user, display, via, kind, body, attrs, client_id`.
    static func envelope(_ row: Row) throws -> Envelope {
        let room = try Self.room(row, 0, table: "envelopes")
        let seq = try unsigned(row, 1, column: "envelopes.seq", room: room)
        let place = "envelope \(room)#\(seq)"
        do {
            let userText = try row.decode(String.self, atIndex: 4)
            guard let user = UserName(userText), user.rawValue == userText else {
                throw SwitchboardError(corrupt, "\(place): invalid user name \(String(reflecting: userText))")
            }
            let viaText = try row.decode(String.self, atIndex: 6)
            guard let via = Via(rawValue: viaText) else {
                throw SwitchboardError(corrupt, "\(place): unknown via \(String(reflecting: viaText))")
            }
            let kindText = try row.decode(String.self, atIndex: 7)
            guard let kind = EnvelopeKind(rawValue: kindText) else {
                throw SwitchboardError(corrupt, "\(place): unknown kind \(String(reflecting: kindText))")
            }
            var attrs: [String: String] = [:]
            if let json = try row.decode(String?.self, atIndex: 9) {
                do {
                    attrs = try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
                } catch {
                    throw SwitchboardError(corrupt, "\(place): attrs are not a JSON object of strings")
                }
            }
            return Envelope(
                id: try row.decode(String.self, atIndex: 2),
                room: room,
                seq: seq,
                ts: try row.decode(Int64.self, atIndex: 3),
                from: Sender(user: user, display: try row.decode(String?.self, atIndex: 5), via: via),
                kind: kind,
                body: try row.decode(String.self, atIndex: 8),
                attrs: attrs,
                clientID: try row.decode(String?.self, atIndex: 10)
            )
        } catch let error as SwitchboardError {
            throw error
        } catch {
            throw SwitchboardError(corrupt, "\(place): \(error)")
        }
    }

    /// A room name column, which must already be in canonical (lower-case) form.
    static func room(_ row: Row, _ index: Int, table: String) throws -> RoomName {
        let text: String
        do {
            text = try row.decode(String.self, atIndex: index)
        } catch {
            throw SwitchboardError(corrupt, "\(table): unreadable room name: \(error)")
        }
        guard let name = RoomName(text), name.rawValue == text else {
            throw SwitchboardError(corrupt, "\(table): invalid room name \(String(reflecting: text))")
        }
        return name
    }

    /// A non-negative integer column (a seq).
    static func unsigned(_ row: Row, _ index: Int, column: String, room: RoomName) throws -> UInt64 {
        let value: Int64
        do {
            value = try row.decode(Int64.self, atIndex: index)
        } catch {
            throw SwitchboardError(corrupt, "\(column) of room \(room): \(error)")
        }
        guard let unsigned = UInt64(exactly: value) else {
            throw SwitchboardError(corrupt, "\(column) of room \(room) is negative (\(value))")
        }
        return unsigned
    }

    /// An account row: `name, salt, iterations, scram_sha1_stored_key, scram_sha1_server_key,
    /// scram_sha256_stored_key, scram_sha256_server_key, digest_realm, digest_ha1_md5,
    /// digest_ha1_sha256`.
    static func credentials(_ row: Row) throws -> StoredCredentials {
        let user = try Self.user(row, 0)
        do {
            return StoredCredentials(
                user: user,
                salt: [UInt8](try row.decode(Data.self, atIndex: 1)),
                iterations: try row.decode(Int.self, atIndex: 2),
                scramSHA1: .init(
                    storedKey: [UInt8](try row.decode(Data.self, atIndex: 3)),
                    serverKey: [UInt8](try row.decode(Data.self, atIndex: 4))),
                scramSHA256: .init(
                    storedKey: [UInt8](try row.decode(Data.self, atIndex: 5)),
                    serverKey: [UInt8](try row.decode(Data.self, atIndex: 6))),
                digestRealm: try row.decode(String.self, atIndex: 7),
                digestHA1MD5: try row.decode(String.self, atIndex: 8),
                digestHA1SHA256: try row.decode(String.self, atIndex: 9)
            )
        } catch {
            throw SwitchboardError(corrupt, "account \(user): \(error)")
        }
    }

    /// A user name column, which must already be in canonical (lower-case) form.
    static func user(_ row: Row, _ index: Int) throws -> UserName {
        let text: String
        do {
            text = try row.decode(String.self, atIndex: index)
        } catch {
            throw SwitchboardError(corrupt, "accounts: unreadable user name: \(error)")
        }
        guard let user = UserName(text), user.rawValue == text else {
            throw SwitchboardError(corrupt, "accounts: invalid user name \(String(reflecting: text))")
        }
        return user
    }
}

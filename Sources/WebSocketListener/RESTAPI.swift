import Foundation
import Hummingbird
import NIOCore
import SwitchboardCore

/// An error answered as `{"error":{"code","message"}}` with an HTTP status.
struct APIError: HTTPResponseError {
    var status: HTTPResponse.Status
    var error: SwitchboardError
    var headers: HTTPFields = [:]

    init(_ status: HTTPResponse.Status, _ code: SwitchboardError.Code, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.error = SwitchboardError(code, message)
        self.headers = headers
    }

    /// The status that fits an error the bus or a check raised.
    init(_ error: SwitchboardError) {
        let status: HTTPResponse.Status = switch error.code {
        case .noSuchRoom, .noSuchUser, .notFound: .notFound
        case .forbidden: .forbidden
        case .bodyTooLarge, .requestTooLarge: .contentTooLarge
        case .roomExists: .conflict
        case .authFailed, .authRequired, .invalidToken: .unauthorized
        case .storageUnavailable: .serviceUnavailable
        case .shuttingDown: .serviceUnavailable
        default: .badRequest
        }
        self.init(status, error.code, error.message)
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: jsonBody)))
    }

    /// `{"error": {"code", "message"}}`.
    var jsonBody: [UInt8] {
        var body: [UInt8] = Array(#"{"error":{"code":"#.utf8)
        JSONWriter.string(error.code.rawValue, into: &body)
        body.append(contentsOf: #","message":"#.utf8)
        JSONWriter.string(error.message, into: &body)
        body.append(contentsOf: "}}".utf8)
        return body
    }
}

/// Turns every error (Hummingbird's own 404, a too-large body, an unexpected
/// throw) into the JSON error shape; a 404 on a known path with another method
/// becomes 405.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Path shapes of the API, for telling 405 from 404.
    static var knownPaths: [[String]] {
        [["api", "v1", "token"], ["api", "v1", "rooms"], ["api", "v1", "rooms", "*"], ["api", "v1", "rooms", "*", "messages"],
         ["api", "v1", "rooms", "*", "occupants"], ["healthz"], ["metrics"], ["ws"]]
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            switch error.status {
            case .notFound:
                let parts = request.uri.path.split(separator: "/").map(String.init)
                let known = Self.knownPaths.contains { shape in
                    shape.count == parts.count && zip(shape, parts).allSatisfy { $0 == "*" || $0 == $1 }
                }
                if known { throw APIError(.methodNotAllowed, .methodNotAllowed, "\(request.method) is not allowed on \(request.uri.path)") }
                throw APIError(.notFound, .notFound, "no such resource: \(request.uri.path)")
            case .contentTooLarge:
                throw APIError(.contentTooLarge, .requestTooLarge, "the request body is too large")
            default:
                throw APIError(error.status, SwitchboardError.Code(rawValue: Self.code(for: error.status)), error.body ?? "\(error.status)")
            }
        } catch let error as SwitchboardError {
            throw APIError(error)
        }
    }

    static func code(for status: HTTPResponse.Status) -> String {
        status.reasonPhrase.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }).joined(separator: "_")
    }
}

/// The REST API under `/api/v1`, plus `/healthz` and `/metrics`.
struct RESTAPI: Sendable {
    let shared: WebSocketShared
    let rooms: any RoomStore
    let health: HealthRegistry
    let metricsExposition: (@Sendable () -> [UInt8])?

    func register(on router: Router<some RequestContext>) {
        router.get("healthz") { _, _ in self.healthz() }
        router.get("metrics") { _, _ in self.metrics() }
        let api = router.group("api/v1")
        api.post("token") { request, context in try await self.token(request, context) }
        api.get("rooms") { request, _ in try await self.listRooms(request) }
        api.post("rooms") { request, context in try await self.createRoom(request, context) }
        api.delete("rooms/:room") { request, context in try await self.deleteRoom(request, context) }
        api.get("rooms/:room/messages") { request, context in try await self.messages(request, context) }
        api.post("rooms/:room/messages") { request, context in try await self.publish(request, context) }
        api.get("rooms/:room/occupants") { request, context in try await self.occupants(request, context) }
    }

    // MARK: Endpoints

    func healthz() -> Response {
        let statuses = health.check()
        var out: [UInt8] = []
        let ready = !statuses.isEmpty && statuses.allSatisfy(\.up)
        out.append(contentsOf: #"{"status":"#.utf8)
        JSONWriter.string(ready ? "ok" : "unavailable", into: &out)
        if let storage = statuses.first(where: { !$0.isListener }) {
            out.append(contentsOf: #","storage":"#.utf8)
            JSONWriter.string(storage.up ? "ok" : "down", into: &out)
        }
        out.append(contentsOf: #","listeners":"#.utf8)
        JSONWriter.object(Dictionary(statuses.filter(\.isListener).map { ($0.name, $0.up ? "up" : "down") },
                                     uniquingKeysWith: { a, _ in a }), into: &out)
        out.append(UInt8(ascii: "}"))
        return Self.json(ready ? .ok : .serviceUnavailable, out)
    }

    func metrics() -> Response {
        let body = metricsExposition?() ?? []
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    func token(_ request: Request, _ context: some RequestContext) async throws -> Response {
        let credentials = try await decode(TokenRequest.self, request, context)
        guard let user = await shared.authenticator.authenticate(user: credentials.user, password: credentials.password) else {
            SwitchboardMetrics.reject(.rest, reason: .authFailed)
            throw APIError(.unauthorized, .authFailed, "invalid user or password")
        }
        let issued = shared.tokens.issue(for: user, nowMillis: shared.clock())
        var out: [UInt8] = Array(#"{"token":"#.utf8)
        JSONWriter.string(issued.token, into: &out)
        out.append(contentsOf: #","user":"#.utf8)
        JSONWriter.string(user.rawValue, into: &out)
        out.append(contentsOf: #","expires_at":\#(issued.expiresAt)}"#.utf8)
        return Self.json(.ok, out)
    }

    /// The `{room}` path segment, percent-decoded (RFC 3986 §2.1: `lob%62y` names `lobby`);
    /// a malformed escape is an invalid room name like any other.
    static func pathRoom(_ context: some RequestContext) throws(SwitchboardError) -> RoomName {
        let raw = context.parameters.get("room")
        return try WebSocketConnection.room(raw.map { $0.removingPercentEncoding ?? $0 })
    }

    func listRooms(_ request: Request) async throws -> Response {
        _ = try authenticatedUser(request)
        let list = try await storage { try await rooms.listRooms() }
        var out: [UInt8] = Array(#"{"rooms":["#.utf8)
        for (index, room) in list.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            Self.writeRoom(room, into: &out)
        }
        out.append(contentsOf: "]}".utf8)
        return Self.json(.ok, out)
    }

    func createRoom(_ request: Request, _ context: some RequestContext) async throws -> Response {
        _ = try authenticatedUser(request)
        let name = try await decode(NewRoom.self, request, context).name
        let room = try WebSocketConnection.room(name)
        guard case .group = room.scope else {
            throw APIError(.badRequest, .invalidRoom, "room names starting with dm. or calls. are reserved")
        }
        do {
            try await rooms.createRoom(room, now: shared.clock())
        } catch let error as SwitchboardError where error.code == .roomExists {
            throw APIError(.conflict, .roomExists, "room \(room) already exists")
        } catch {
            throw APIError(.serviceUnavailable, .storageUnavailable, "the room could not be created")
        }
        guard let info = try await storage({ try await rooms.roomInfo(room) }) else {
            throw APIError(.serviceUnavailable, .storageUnavailable, "the room vanished while being created")
        }
        var out: [UInt8] = []
        Self.writeRoom(info, into: &out)
        return Self.json(.created, out, headers: [.location: "/api/v1/rooms/\(room)"])
    }

    func deleteRoom(_ request: Request, _ context: some RequestContext) async throws -> Response {
        _ = try authenticatedUser(request)
        let room = try Self.pathRoom(context)
        guard case .group = room.scope else { throw APIError(.forbidden, .forbidden, "direct and call-log rooms cannot be deleted") }
        guard try await storage({ try await rooms.deleteRoom(room) }) else {
            throw APIError(.notFound, .noSuchRoom, "no room named \(room)")
        }
        shared.bus.roomDeleted(room)
        return Response(status: .noContent)
    }

    func messages(_ request: Request, _ context: some RequestContext) async throws -> Response {
        let user = try authenticatedUser(request)
        let room = try Self.pathRoom(context)
        let query = request.uri.queryParameters
        let before = try WebSocketConnection.sequence(Self.integer(query.get("before"), "before"), field: "before")
        let after = try WebSocketConnection.sequence(Self.integer(query.get("after"), "after"), field: "after")
        let limit = try WebSocketConnection.limit(Self.integer(query.get("limit"), "limit"))
        try AccessRules.canRead(room, user: user)
        try await requireRoom(room)
        let envelopes = try await shared.bus.history(of: room, reader: user, before: before, after: after, limit: limit)
        var out: [UInt8] = Array(#"{"room":"#.utf8)
        JSONWriter.string(room.rawValue, into: &out)
        out.append(contentsOf: #","envelopes":"#.utf8)
        ServerFrame.envelopeArray(envelopes, into: &out)
        out.append(UInt8(ascii: "}"))
        return Self.json(.ok, out)
    }

    func publish(_ request: Request, _ context: some RequestContext) async throws -> Response {
        let user = try authenticatedUser(request)
        let room = try Self.pathRoom(context)
        let message = try await decode(NewMessage.self, request, context)
        let draft = EnvelopeDraft(room: room, from: Sender(user: user, via: .rest), kind: try WebSocketConnection.kind(message.kind),
                                  body: message.body, attrs: message.attrs ?? [:], clientID: message.clientID)
        // A direct room names both users: the other must exist (a `dm.<me>.<anyone>` room
        // would otherwise wait for whoever takes that name later).
        if let other = room.otherParty(than: user), (try? await shared.accounts.credentials(for: other)) == nil {
            throw APIError(SwitchboardError(.noSuchUser, "no user named \(other)"))
        }
        let ack = try await shared.bus.publish(draft, privileged: false)
        var out: [UInt8] = [UInt8(ascii: "{")]
        ServerFrame.ackFields(ack, into: &out)
        out.remove(at: 1)  // the leading comma of the first field
        out.append(UInt8(ascii: "}"))
        return Self.json(ack.duplicate ? .ok : .created, out)
    }

    func occupants(_ request: Request, _ context: some RequestContext) async throws -> Response {
        let user = try authenticatedUser(request)
        let room = try Self.pathRoom(context)
        try AccessRules.canRead(room, user: user)
        try await requireRoom(room)
        var out: [UInt8] = Array(#"{"room":"#.utf8)
        JSONWriter.string(room.rawValue, into: &out)
        out.append(contentsOf: #","occupants":"#.utf8)
        ServerFrame.occupantArray(shared.bus.occupants(of: room), into: &out)
        out.append(UInt8(ascii: "}"))
        return Self.json(.ok, out)
    }

    // MARK: Helpers

    /// The user of the request's bearer token.
    func authenticatedUser(_ request: Request) throws -> UserName {
        let challenge: HTTPFields = [.wwwAuthenticate: #"Bearer realm="switchboard""#]
        guard let header = request.headers[.authorization] else {
            SwitchboardMetrics.reject(.rest, reason: .authRequired)
            throw APIError(.unauthorized, .authRequired, "send Authorization: Bearer <token> (POST /api/v1/token)", headers: challenge)
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            SwitchboardMetrics.reject(.rest, reason: .invalidToken)
            throw APIError(.unauthorized, .invalidToken, "the Authorization header must be 'Bearer <token>'", headers: challenge)
        }
        do {
            return try shared.tokens.verify(String(parts[1]), nowMillis: shared.clock())
        } catch {
            SwitchboardMetrics.reject(.rest, reason: .invalidToken)
            throw APIError(.unauthorized, .invalidToken, error == .expired ? "the token has expired" : "the token is not valid",
                           headers: challenge)
        }
    }

    /// Group rooms must exist; direct and call-log rooms exist implicitly.
    private func requireRoom(_ room: RoomName) async throws {
        guard case .group = room.scope else { return }
        guard try await storage({ try await rooms.roomInfo(room) }) != nil else {
            throw APIError(.notFound, .noSuchRoom, "no room named \(room)")
        }
    }

    private func storage<T>(_ work: () async throws -> T) async throws -> T {
        do {
            return try await work()
        } catch {
            shared.logger.error("storage request failed", metadata: ["error": "\(error)"])
            throw APIError(.serviceUnavailable, .storageUnavailable, "storage is unavailable")
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: some RequestContext) async throws -> T {
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: shared.settings.maxMessageBytes)
        } catch {
            SwitchboardMetrics.reject(.rest, reason: .requestTooLarge)
            throw APIError(.contentTooLarge, .requestTooLarge, "the request body exceeds \(shared.settings.maxMessageBytes) bytes")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch let DecodingError.keyNotFound(key, _) {
            throw APIError(.badRequest, .badRequest, "missing field '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, context) where !context.codingPath.isEmpty {
            throw APIError(.badRequest, .badRequest, "field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
        } catch let DecodingError.valueNotFound(_, context) {
            throw APIError(.badRequest, .badRequest, "field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' is null")
        } catch {
            SwitchboardMetrics.reject(.rest, reason: .invalidJSON)
            throw APIError(.badRequest, .invalidJSON, "the request body must be a JSON object")
        }
    }

    static func integer(_ text: String?, _ name: String) throws(SwitchboardError) -> Int64? {
        guard let text else { return nil }
        guard let value = Int64(text) else { throw SwitchboardError(.badRequest, "'\(name)' must be an integer") }
        return value
    }

    static func writeRoom(_ room: RoomInfo, into out: inout [UInt8]) {
        out.append(contentsOf: #"{"name":"#.utf8)
        JSONWriter.string(room.name.rawValue, into: &out)
        out.append(contentsOf: #","last_seq":\#(room.lastSeq),"created_at":\#(room.createdAt)}"#.utf8)
    }

    static func json(_ status: HTTPResponse.Status, _ body: [UInt8], headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// `POST /api/v1/token`.
private struct TokenRequest: Decodable { var user: String; var password: String }
/// `POST /api/v1/rooms`.
private struct NewRoom: Decodable { var name: String }
/// `POST /api/v1/rooms/{room}/messages`.
private struct NewMessage: Decodable {
    var body: String
    var kind: String?
    var clientID: String?
    var attrs: [String: String]?
    enum CodingKeys: String, CodingKey { case body, kind, attrs, clientID = "client_id" }
}

import Foundation
import Hummingbird
import NIOCore

/// The web chat page: the files of the `Public` resource folder, read once at
/// start and served from memory (`/` is `index.html`).
struct WebPage: Sendable {
    struct File: Sendable {
        var contentType: String
        var body: ByteBuffer
    }

    private let files: [String: File]

    /// Reads every file of the bundled `Public` folder; empty when the bundle is missing.
    static func load() -> WebPage {
        guard let folder = Bundle.module.url(forResource: "Public", withExtension: nil),
              let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path)
        else { return WebPage(files: [:]) }
        var files: [String: File] = [:]
        for name in names {
            guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent(name).path) else { continue }
            files[name] = File(contentType: contentType(of: name), body: ByteBuffer(bytes: data))
        }
        return WebPage(files: files)
    }

    var isEmpty: Bool { files.isEmpty }

    func register(on router: Router<some RequestContext>) {
        router.get("/") { _, _ in try self.response(for: "index.html") }
        router.get(":file") { _, context in try self.response(for: context.parameters.require("file")) }
    }

    private func response(for name: String) throws -> Response {
        guard let file = files[name] else { throw HTTPError(.notFound) }
        return Response(status: .ok, headers: [.contentType: file.contentType, .cacheControl: "no-cache"],
                        body: .init(byteBuffer: file.body))
    }

    static func contentType(of name: String) -> String {
        switch (name as NSString).pathExtension.lowercased() {
        case "html": "text/html; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "svg": "image/svg+xml"
        case "png": "image/png"
        case "ico": "image/x-icon"
        case "json": "application/json"
        default: "application/octet-stream"
        }
    }
}

import Testing
@testable import WebSocketListener

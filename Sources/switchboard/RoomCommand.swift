import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardStore

/// `switchboard room create|list|delete`.
struct RoomCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "room", abstract: "Manage rooms.", subcommands: [Create.self, List.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a room.")
        @OptionGroup var config: ConfigOptions
        @Argument(help: "Room name: 1–64 of a-z 0-9 . _ - (not starting with dm. or calls.).") var name: String

        func run() async throws {
            let configuration = try config.load()
            let room = try parseRoom(name)
            do {
                try await openStore(configuration).createRoom(room, now: Int64(Date().timeIntervalSince1970 * 1000))
            } catch let error as SwitchboardError {
                throw CommandError(error.message)
            }
            print("room \(room) created")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List rooms, one per line.")
        @OptionGroup var config: ConfigOptions

        func run() async throws {
            let configuration = try config.load()
            for room in try await openStore(configuration).listRooms() {
                print(room.name.rawValue)
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a room and its history.")
        @OptionGroup var config: ConfigOptions
        @Argument(help: "Room name.") var name: String

        func run() async throws {
            let configuration = try config.load()
            let room = try parseRoom(name)
            guard try await openStore(configuration).deleteRoom(room) else { throw CommandError("no room named \(room)") }
            print("room \(room) deleted")
        }
    }
}

func parseRoom(_ name: String) throws -> RoomName {
    guard let room = RoomName(name), room.rawValue == name.lowercased() else {
        throw CommandError("'\(name)' is not a valid room name (1–64 characters of a-z 0-9 . _ -)")
    }
    guard case .group = room.scope else {
        throw CommandError("room names starting with dm. or calls. are reserved")
    }
    return room
}

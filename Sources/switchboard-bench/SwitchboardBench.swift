import ArgumentParser

/// `switchboard-bench`: load generators for `make bench` (Tests/bench/run_bench.py).
/// Each subcommand prints one JSON object with its results on stdout; progress goes to stderr.
@main
struct SwitchboardBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-bench",
        abstract: "Switchboard benchmarks: in-process bus fan-out, history group commit, end-to-end line/IRC/WebSocket latency, WebSocket memory per connection, MQTT bridge vs broker, XMPP MUC fan-out.",
        subcommands: [FanoutCommand.self, HistoryCommand.self, LineLoadCommand.self, WSLoadCommand.self, WSIdleCommand.self, MQTTLoadCommand.self, XMPPLoadCommand.self])
}


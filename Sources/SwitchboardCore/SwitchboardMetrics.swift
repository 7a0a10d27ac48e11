import Metrics

/// The metric names every part records through swift-metrics, so `/metrics`
/// reads the same whichever listener produced them.
public enum SwitchboardMetrics {
    /// Envelopes accepted from clients, by protocol (`protocol` dimension).
    public static let envelopesIn = "switchboard_envelopes_in_total"
    /// Envelopes delivered to sessions, by protocol.
    public static let envelopesOut = "switchboard_envelopes_out_total"
    /// Open sessions, by protocol.
    public static let sessions = "switchboard_sessions"
    /// Time from commit to the end of one batch's fan-out.
    public static let fanoutLatency = "switchboard_fanout_seconds"
    /// Time of one history group commit.
    public static let commitLatency = "switchboard_history_commit_seconds"
    /// Envelopes per group commit.
    public static let commitBatchSize = "switchboard_history_commit_batch_size"
    /// Sessions disconnected because their outbound queue overflowed.
    public static let slowConsumers = "switchboard_slow_consumers_total"
    /// Inputs rejected, by protocol and reason.
    public static let rejected = "switchboard_rejected_total"
    /// Connections accepted, by protocol.
    public static let connections = "switchboard_connections_total"

    /// Counts one accepted connection on `via`.
    public static func connectionAccepted(_ via: Via) {
        Counter(label: connections, dimensions: [("protocol", via.rawValue)]).increment()
    }

    /// Counts one rejected input of `reason` on `via`.
    public static func reject(_ via: Via, reason: SwitchboardError.Code) {
        Counter(label: rejected, dimensions: [("protocol", via.rawValue), ("reason", reason.rawValue)]).increment()
    }
}

/// Every metric kubebridge exports, in one place, named by Prometheus conventions: `kubebridge_`,
/// the unit in the name, `_total` on counters. Labels: `resource` (`group/version/resource`, with
/// `core` for the core group), `sink`, `type` (the change type), `reason`.
public enum MetricName {
    public static let changesReceived = "kubebridge_changes_received_total"
    public static let unencodable = "kubebridge_changes_unencodable_total"
    public static let delivered = "kubebridge_sink_delivered_total"
    public static let failed = "kubebridge_sink_failed_total"
    public static let retried = "kubebridge_sink_retried_total"
    public static let deadLettered = "kubebridge_sink_dead_lettered_total"
    public static let filtered = "kubebridge_sink_filtered_total"
    public static let deliveryLatency = "kubebridge_delivery_latency_seconds"
    public static let bufferedEvents = "kubebridge_pipeline_buffered_events"
    public static let bufferedBytes = "kubebridge_pipeline_buffered_bytes"
    public static let bufferCapacity = "kubebridge_pipeline_buffer_capacity_events"
    public static let sinkUp = "kubebridge_sink_up"
    public static let checkpointAge = "kubebridge_checkpoint_age_seconds"
    public static let checkpointSaves = "kubebridge_checkpoint_saves_total"
    public static let watchRestarts = "kubebridge_watch_restarts_total"
    public static let relists = "kubebridge_relists_total"
    public static let forbiddenResources = "kubebridge_forbidden_resources"
    public static let watchedResources = "kubebridge_watched_resources"
    public static let leader = "kubebridge_leader"
}

extension GroupVersionResource {
    /// The `resource` label: `group/version/resource`, `core` for the core group.
    public var metricLabel: String { description }
}

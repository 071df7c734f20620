/// How a CloudEvents protocol binding carries an event: the modes the Kafka, NATS and HTTP
/// bindings define, each sink taking those its binding has.
public enum ContentMode: String, Sendable, CaseIterable {
    /// The attributes as headers (`ce_*` in Kafka, `ce-*` in NATS and HTTP), the object JSON as
    /// the message or body.
    case binary
    /// The JSON event format as the message or body, `content-type: application/cloudevents+json`.
    case structured
    /// A JSON array of events per message, `content-type: application/cloudevents-batch+json`
    /// (HTTP only).
    case batch
}

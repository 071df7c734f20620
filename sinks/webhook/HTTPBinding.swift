import BridgeCore
import Crypto
import Foundation
import KubeModel
import NIOCore
import NIOFoundationCompat

/// One request's worth of events in the CloudEvents HTTP protocol binding.
struct WebhookMessage {
    /// The Standard Webhooks message id: the event's id, or for a batch one derived from the
    /// events' ids, so a retried request keeps its id.
    var id: String
    var headers: [(name: String, value: String)]
    var body: ByteBuffer

    static func binary(_ event: OutboundEvent, patch: Bool = false) -> WebhookMessage {
        let envelope = event.envelope
        var headers: [(name: String, value: String)] = [("content-type", Envelope.dataContentType)]
        for (name, value) in envelope.attributes(patch: patch ? .upTo(Envelope.patchHeaderLimit) : .none) where name != "datacontenttype" {
            headers.append(("ce-" + name, percentEncoded(value)))
        }
        return WebhookMessage(id: envelope.id, headers: headers, body: envelope.data)
    }

    static func structured(_ event: OutboundEvent, patch: Bool = false) -> WebhookMessage {
        WebhookMessage(id: event.envelope.id, headers: [("content-type", "application/cloudevents+json; charset=utf-8")],
                       body: event.envelope.structured(patch: patch))
    }

    static func batch(_ events: [OutboundEvent], patch: Bool = false) -> WebhookMessage {
        var body = ByteBuffer()
        body.writeStaticString("[")
        var digest = SHA256()
        for (index, event) in events.enumerated() {
            if index > 0 { body.writeStaticString(",") }
            var structured = event.envelope.structured(patch: patch)
            body.writeBuffer(&structured)
            digest.update(data: Array(event.envelope.id.utf8) + [0x0A])
        }
        body.writeStaticString("]")
        let hash = digest.finalize().prefix(16).map { PercentEncoding.hex($0) }.joined()
        return WebhookMessage(id: "batch_\(hash)", headers: [("content-type", "application/cloudevents-batch+json; charset=utf-8")], body: body)
    }

    /// The binding's header encoding (section 3.1.3.2): space, `"`, `%` and every byte outside
    /// printable ASCII become `%XX`, so any attribute value survives an HTTP header.
    static func percentEncoded(_ value: String) -> String {
        PercentEncoding.encode(value) { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "%") }
    }
}

/// Signs requests by the Standard Webhooks scheme: `webhook-id`, `webhook-timestamp` (Unix
/// seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
public struct WebhookSigner: Sendable {
    let key: SymmetricKey

    /// `secret`: `whsec_` followed by base64, or the base64 alone, as the scheme's libraries take it.
    public init(secret: String) throws {
        var text = secret.trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("whsec_") { text.removeFirst("whsec_".count) }
        while text.count % 4 != 0 { text += "=" }
        guard let bytes = Data(base64Encoded: text), !bytes.isEmpty else {
            throw WebhookError(description: "the signing secret is not base64 (Standard Webhooks secrets look like whsec_ followed by base64)")
        }
        key = SymmetricKey(data: bytes)
    }

    public func signature(id: String, timestamp: Int, body: ByteBuffer) -> String {
        var mac = HMAC<SHA256>(key: key)
        mac.update(data: Array("\(id).\(timestamp).".utf8))
        mac.update(data: body.readableBytesView)
        return "v1," + Data(mac.finalize()).base64EncodedString()
    }
}

public struct WebhookError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(description: String) {
        self.description = description
    }
}

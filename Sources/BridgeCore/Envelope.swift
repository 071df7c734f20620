import Foundation
import KubeModel
import NIOCore

/// A CloudEvents 1.0 event for one change. A class: each event passes through buffers, batches
/// and retries of every sink, and a copy is then one reference, not a dozen strings.
public final class Envelope: Sendable {
    /// Deterministic: the same change always gets the same id, so redeliveries deduplicate.
    public let id: String
    public let source: String
    public let type: String
    public let subject: String
    /// When the bridge received the change (RFC 3339).
    public let time: String
    public static let dataContentType = "application/json"
    /// The object as received, after the configured redaction; spliced in as bytes.
    public let data: ByteBuffer
    /// Extension attributes, in a fixed order.
    public let extensions: [(name: String, value: String)]
    /// The object's uid (the `partitionkey` extension): a broker's partition key, so that an
    /// object's changes stay in one partition, in order.
    public let partitionKey: String
    /// The JSON Pointers of what changed since the state last sent of the object (the
    /// `changedpaths` extension); nil when there was none to compare with.
    public let changedPaths: [String]?
    /// The RFC 7386 merge patch from the state last sent of the object to this one (compact
    /// JSON), when asked for (`EnvelopeOptions.mergePatch`) and there was a state to compare with.
    public let mergePatch: String?

    init(id: String, source: String, type: String, subject: String, time: String, data: ByteBuffer,
         extensions: [(name: String, value: String)], partitionKey: String, changedPaths: [String]? = nil, mergePatch: String? = nil) {
        self.changedPaths = changedPaths
        self.mergePatch = mergePatch
        self.id = id
        self.source = source
        self.type = type
        self.subject = subject
        self.time = time
        self.data = data
        self.extensions = extensions
        self.partitionKey = partitionKey
    }

    /// `specversion`, `id`, `source`, `type`, `subject`, `time`, `datacontenttype` and the
    /// extensions: every attribute but `data`, as a protocol binding's headers carry them.
    public var attributes: [(name: String, value: String)] { attributes(patch: .none) }

    /// The attributes with the merge patch where `patch` says (see `extensions(patch:)`).
    public func attributes(patch: PatchPlacement) -> [(name: String, value: String)] {
        [("specversion", "1.0"), ("id", id), ("source", source), ("type", type), ("subject", subject), ("time", time),
         ("datacontenttype", Self.dataContentType)] + extensions(patch: patch)
    }

    /// Extensions whose CloudEvents type is Boolean (`true` or `false`).
    static let booleanAttributes: Set<String> = ["finalstateunknown", "patchomitted"]

    /// Where a sink carries the merge patch.
    public enum PatchPlacement: Sendable, Equatable {
        /// Nowhere: the sink did not ask for it.
        case none
        /// As the `mergepatch` extension, whatever its size (the JSON event format).
        case whole
        /// As the `mergepatch` extension (a header, in binary mode) while it has at most this
        /// many bytes; beyond, `patchomitted` says it was left out.
        case upTo(Int)
    }

    /// The bytes a binary mode's `mergepatch` header may have (HTTP servers commonly take 8 KiB
    /// of headers in all).
    public static let patchHeaderLimit = 4096

    /// The extensions as a sink sends them, with the merge patch where `patch` says.
    public func extensions(patch: PatchPlacement) -> [(name: String, value: String)] {
        guard let mergePatch else { return extensions }
        switch patch {
        case .none: return extensions
        case .whole: return extensions + [("mergepatch", mergePatch)]
        case .upTo(let limit): return extensions + [mergePatch.utf8.count <= limit ? ("mergepatch", mergePatch) : ("patchomitted", "true")]
        }
    }

    /// The JSON event format (structured mode): the attributes, then `data` spliced in; with
    /// `patch`, the merge patch as the `mergepatch` extension (a JSON string holding the patch,
    /// since extension values are strings).
    public func structured(patch: Bool = false) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(data.readableBytes + 512 + (patch ? mergePatch?.utf8.count ?? 0 : 0))
        out.writeStaticString("{")
        for (index, attribute) in attributes(patch: patch ? .whole : .none).enumerated() {
            if index > 0 { out.writeStaticString(",") }
            out.writeJSONString(attribute.name)
            out.writeStaticString(":")
            if Self.booleanAttributes.contains(attribute.name) {
                // A CloudEvents Boolean is a JSON boolean in this format (a header carries the string).
                out.writeString(attribute.value)
            } else {
                out.writeJSONString(attribute.value)
            }
        }
        out.writeStaticString(",\"data\":")
        var data = self.data
        out.writeBuffer(&data)
        out.writeStaticString("}")
        return out
    }
}

/// How changes become envelopes.
public struct EnvelopeOptions: Sendable {
    /// The cluster's identity in `source`: `/kubebridge/<cluster>/...`.
    public var cluster = "default"
    /// The first part of `type`: `<prefix>.<group>.<version>.<resource>.<change>`.
    public var typePrefix = "io.kubebridge"
    public var dropManagedFields = true
    /// Secrets whose `data` and `stringData` may pass unredacted, as `namespace/name` patterns
    /// (`*` matches within a part); none by default.
    public var revealSecrets: [String] = []
    /// Compare each `modified` and `synced` event with the state last sent of its object and say
    /// what changed (`changedpaths`); needs a store that keeps sent states.
    public var changedPaths = false
    /// Build the merge patch from that state too (`Envelope.mergePatch`), for sinks that send it.
    public var mergePatch = false
    public static let redactionMarker = "REDACTED"

    public init() {}
}

/// Builds envelopes; its work is on the path of every change.
public struct EnvelopeBuilder: Sendable {
    public let options: EnvelopeOptions

    public init(options: EnvelopeOptions = EnvelopeOptions()) {
        self.options = options
    }

    /// The extension attributes an envelope can carry, in their order.
    public static let extensionNames = ["resourceversion", "kind", "name", "namespace", "uid", "partitionkey", "changetype", "finalstateunknown",
                                        "changedby", "changeoperation", "changesubresource", "changedpaths", "mergepatch", "patchomitted"]

    /// The deterministic id. A state of an object (added, modified or synced at a resourceVersion)
    /// is the same state whichever way the bridge learned of it, so all three share an id: a
    /// `synced` resent after a crash deduplicates against the `modified` sent before it. A deletion
    /// has its own id, since a deletion found by relisting carries the last known version.
    public static func id(uid: String, resourceVersion: String, type: ChangeType) -> String {
        type == .deleted ? "\(uid)/\(resourceVersion)/deleted" : "\(uid)/\(resourceVersion)"
    }

    /// `previous` is the state last sent of the object (an earlier envelope's `data`), for a
    /// `modified` or `synced` change: what changed since is said in `changedpaths`.
    public func envelope(for change: Change, receivedAt: Date, previous: ByteBuffer? = nil) throws -> Envelope {
        let meta = change.metadata
        let resource = change.resource
        let group = resource.group.isEmpty ? "core" : resource.group
        var edits = ObjectRewriter.Edits(dropManagedFields: options.dropManagedFields)
        if resource.group.isEmpty, resource.resource == "secrets", !revealed(meta) {
            edits.redactDataWith = EnvelopeOptions.redactionMarker
        }
        // A deleted object's managedFields name its last writer, not whoever deleted it.
        let rewritten = try ObjectRewriter.rewrite(edits, change.object.bytes, readingManagedFields: change.type != .deleted)
        var subject = "\(resource.resource)/\(meta.name)"
        if let namespace = meta.namespace { subject = "namespaces/\(namespace)/\(subject)" }
        var extensions: [(name: String, value: String)] = []
        extensions.reserveCapacity(Self.extensionNames.count)
        extensions.append(("resourceversion", meta.resourceVersion))
        extensions.append(("kind", meta.kind))
        extensions.append(("name", meta.name))
        if let namespace = meta.namespace { extensions.append(("namespace", namespace)) }
        extensions.append(("uid", meta.uid))
        extensions.append(("partitionkey", meta.uid))
        extensions.append(("changetype", change.type.rawValue))
        if change.finalStateUnknown { extensions.append(("finalstateunknown", "true")) }
        Self.appendWriter(of: rewritten.managedFields, to: &extensions)
        var changedPaths: [String]?
        var mergePatch: String?
        // A previous state that does not parse (written by something else) is no reason to hold
        // the event back: it goes without its paths.
        if let previous, change.type == .modified || change.type == .synced,
           let difference = try? Self.difference(from: previous, to: rewritten.bytes, patch: options.mergePatch) {
            changedPaths = difference.paths
            mergePatch = difference.patch
            if !difference.paths.isEmpty { extensions.append(("changedpaths", Self.changedPathsValue(difference.paths))) }
        }
        return Envelope(
            id: Self.id(uid: meta.uid, resourceVersion: meta.resourceVersion, type: change.type),
            source: "/kubebridge/\(options.cluster)\(resource.collectionPath(namespace: meta.namespace))",
            type: "\(options.typePrefix).\(group).\(resource.version).\(resource.resource).\(change.type.rawValue)",
            subject: subject, time: Self.timestamp(receivedAt), data: rewritten.bytes, extensions: extensions, partitionKey: meta.uid,
            changedPaths: changedPaths, mergePatch: mergePatch)
    }

    /// `changedby`, `changeoperation` and `changesubresource` from the newest managedFields
    /// entries. Entries tied within the same second all name their managers (comma-separated),
    /// and the operation and subresource are given only when they agree.
    static func appendWriter(of managedFields: [ManagedFieldsEntry], to extensions: inout [(name: String, value: String)]) {
        let newest = ManagedFieldsEntry.newest(managedFields)
        guard let first = newest.first, !first.manager.isEmpty else { return }
        extensions.append(("changedby", newest.count == 1 ? first.manager : newest.map(\.manager).joined(separator: ",")))
        if !first.operation.isEmpty, newest.allSatisfy({ $0.operation == first.operation }) {
            extensions.append(("changeoperation", first.operation))
        }
        if let subresource = first.subresource, !subresource.isEmpty, newest.allSatisfy({ $0.subresource == subresource }) {
            extensions.append(("changesubresource", subresource))
        }
    }

    /// What differs between two states sent of an object, and with `patch` the merge patch (`{}`
    /// when they are the same); nothing when their bytes are the same.
    static func difference(from previous: ByteBuffer, to current: ByteBuffer, patch: Bool) throws -> (paths: [String], patch: String?) {
        guard previous != current else { return ([], patch ? "{}" : nil) }
        let (before, after) = (try JSONValue(parsing: previous), try JSONValue(parsing: current))
        return (JSONDiff.changedPaths(from: before, to: after), patch ? JSONDiff.mergePatch(from: before, to: after)?.text ?? "{}" : nil)
    }

    /// The pointers, comma-separated; a `%` or `,` within one (no Kubernetes field name has
    /// either) is percent-encoded, so that the list splits at its commas.
    static func changedPathsValue(_ paths: [String]) -> String {
        paths.map { escaping($0, ["%": "%25", ",": "%2C"]) }.joined(separator: ",")
    }

    func revealed(_ meta: ObjectMeta) -> Bool {
        let path = "\(meta.namespace ?? "")/\(meta.name)"
        return options.revealSecrets.contains { Self.glob($0, path) }
    }

    static func glob(_ pattern: String, _ text: String) -> Bool {
        let p = pattern.split(separator: "/", omittingEmptySubsequences: false)
        let t = text.split(separator: "/", omittingEmptySubsequences: false)
        guard p.count == t.count else { return false }
        return zip(p, t).allSatisfy { part, value in
            if part == "*" { return true }
            if part.hasSuffix("*") { return value.hasPrefix(part.dropLast()) }
            return part == value
        }
    }

    /// RFC 3339 with milliseconds, UTC.
    static func timestamp(_ date: Date) -> String {
        Timestamp.rfc3339(date, fractionDigits: 3)
    }
}

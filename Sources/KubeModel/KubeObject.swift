import NIOCore

/// The metadata the bridge reads of every object; the rest stays in the object's bytes.
public struct ObjectMeta: Sendable, Hashable {
    public var apiVersion = ""
    public var kind = ""
    public var name = ""
    /// nil for cluster-scoped objects.
    public var namespace: String?
    public var uid = ""
    /// Opaque: compared for equality only, never ordered.
    public var resourceVersion = ""
    public var generation: Int64?
    public var labels: [String: String] = [:]
    public var deletionTimestamp: String?
    /// Set on the BOOKMARK that ends a streaming list's initial events.
    public var isInitialEventsEnd = false

    public init() {}
}

/// An object as the server sent it: its metadata, and its bytes untouched.
public struct KubeObject: Sendable {
    public var metadata: ObjectMeta
    /// The object's JSON exactly as received (for list items, with `kind` and `apiVersion` added
    /// when the server left them out).
    public var bytes: ByteBuffer

    public init(metadata: ObjectMeta, bytes: ByteBuffer) {
        self.metadata = metadata
        self.bytes = bytes
    }

    public var text: String { String(buffer: bytes) }
}

/// One line of a watch stream.
public enum WatchFrame: Sendable {
    case added(KubeObject)
    case modified(KubeObject)
    case deleted(KubeObject)
    /// Moves the collection's resourceVersion forward; `initialEventsEnd` closes a streaming list.
    case bookmark(resourceVersion: String, initialEventsEnd: Bool)
    /// An ERROR event; 410 Expired is the usual one.
    case error(KubeStatus)

    public var typeName: String {
        switch self {
        case .added: "ADDED"
        case .modified: "MODIFIED"
        case .deleted: "DELETED"
        case .bookmark: "BOOKMARK"
        case .error: "ERROR"
        }
    }

    /// Decodes one line: the type, the object's metadata, and the object's bytes as a slice of the line.
    public static func decode(line: ByteBuffer) throws -> WatchFrame {
        var type: String?
        var objectRange: Range<Int>?
        var head = ObjectHead()
        try line.withUnsafeReadableBytes { raw in
            var scanner = JSONScanner(raw)
            scanner.skipWhitespace()
            guard try scanner.peek() == UInt8(ascii: "{") else { throw scanner.error("a watch event must be a JSON object") }
            try scanner.forEachMember { key, scanner in
                if key == "type" {
                    type = try scanner.readString()
                    return true
                }
                if key == "object" {
                    scanner.skipWhitespace()
                    let start = scanner.index
                    head = try ObjectHead.scan(&scanner)
                    objectRange = start..<scanner.index
                    return true
                }
                return false
            }
            scanner.skipWhitespace()
            guard scanner.isAtEnd else { throw scanner.error("unexpected data after the watch event") }
        }
        guard let type else { throw JSONScanError(offset: 0, reason: "watch event without a type") }
        guard let objectRange else { throw JSONScanError(offset: 0, reason: "watch event without an object") }
        let bytes = line.getSlice(at: line.readerIndex + objectRange.lowerBound, length: objectRange.count)!
        let object = KubeObject(metadata: head.metadata, bytes: bytes)
        switch type {
        case "ADDED": return .added(object)
        case "MODIFIED": return .modified(object)
        case "DELETED": return .deleted(object)
        case "BOOKMARK":
            return .bookmark(resourceVersion: head.metadata.resourceVersion, initialEventsEnd: head.metadata.isInitialEventsEnd)
        case "ERROR":
            return .error(try KubeStatus.decode(bytes))
        default:
            throw JSONScanError(offset: 0, reason: "unknown watch event type \"\(type)\"")
        }
    }
}

/// What the scanner learns of an object in one pass over it.
package struct ObjectHead {
    package var metadata = ObjectMeta()
    package var isEmpty = true
    package var hasKind = false
    package var hasAPIVersion = false

    package init() {}

    package static func scan(_ scanner: inout JSONScanner) throws -> ObjectHead {
        var head = ObjectHead()
        try scanner.forEachMember { key, scanner in
            head.isEmpty = false
            if key == "apiVersion" {
                head.metadata.apiVersion = try scanner.readOptionalString() ?? ""
                head.hasAPIVersion = true
                return true
            }
            if key == "kind" {
                head.metadata.kind = try scanner.readOptionalString() ?? ""
                head.hasKind = true
                return true
            }
            if key == "metadata" {
                scanner.skipWhitespace()
                if try scanner.peek() == UInt8(ascii: "n") { return false }
                try scanMetadata(&scanner, into: &head.metadata)
                return true
            }
            return false
        }
        return head
    }

    private static func scanMetadata(_ scanner: inout JSONScanner, into meta: inout ObjectMeta) throws {
        try scanner.forEachMember(depth: 1) { key, scanner in
            if key == "name" { meta.name = try scanner.readOptionalString() ?? ""; return true }
            if key == "namespace" {
                let namespace = try scanner.readOptionalString() ?? ""
                meta.namespace = namespace.isEmpty ? nil : namespace
                return true
            }
            if key == "uid" { meta.uid = try scanner.readOptionalString() ?? ""; return true }
            if key == "resourceVersion" { meta.resourceVersion = try scanner.readOptionalString() ?? ""; return true }
            if key == "generation" { meta.generation = try scanner.readInt64(); return true }
            if key == "deletionTimestamp" { meta.deletionTimestamp = try scanner.readOptionalString(); return true }
            if key == "labels" {
                scanner.skipWhitespace()
                if try scanner.peek() == UInt8(ascii: "n") { return false }
                try scanner.forEachMember(depth: 2) { labelKey, scanner in
                    if let value = try scanner.readOptionalString() { meta.labels[labelKey.decoded] = value }
                    return true
                }
                return true
            }
            if key == "annotations" {
                scanner.skipWhitespace()
                if try scanner.peek() == UInt8(ascii: "n") { return false }
                try scanner.forEachMember(depth: 2) { annotation, scanner in
                    if annotation == "k8s.io/initial-events-end" {
                        meta.isInitialEventsEnd = try scanner.readOptionalString() == "true"
                        return true
                    }
                    return false
                }
                return true
            }
            return false
        }
    }
}

/// One page of a list.
public struct ObjectList: Sendable {
    public var apiVersion = ""
    public var kind = ""
    public var resourceVersion = ""
    /// Set when more pages follow.
    public var continueToken: String?
    public var remainingItemCount: Int64?
    public var items: [KubeObject] = []

    public init() {}

    /// Decodes a list body. Items of typed lists come without `kind` and `apiVersion`; they are
    /// added here so that every object the bridge emits names its kind, as watch events do.
    public static func decode(_ body: ByteBuffer) throws -> ObjectList {
        var list = ObjectList()
        var itemSpans: [(Range<Int>, ObjectHead)] = []
        try body.withUnsafeReadableBytes { raw in
            var scanner = JSONScanner(raw)
            try scanner.forEachMember { key, scanner in
                if key == "apiVersion" { list.apiVersion = try scanner.readOptionalString() ?? ""; return true }
                if key == "kind" { list.kind = try scanner.readOptionalString() ?? ""; return true }
                if key == "metadata" {
                    try scanner.forEachMember(depth: 1) { key, scanner in
                        if key == "resourceVersion" { list.resourceVersion = try scanner.readOptionalString() ?? ""; return true }
                        if key == "continue" {
                            let token = try scanner.readOptionalString() ?? ""
                            list.continueToken = token.isEmpty ? nil : token
                            return true
                        }
                        if key == "remainingItemCount" { list.remainingItemCount = try scanner.readInt64(); return true }
                        return false
                    }
                    return true
                }
                if key == "items" {
                    scanner.skipWhitespace()
                    if try scanner.peek() == UInt8(ascii: "n") { return false }
                    try scanner.forEachElement(depth: 1) { scanner in
                        scanner.skipWhitespace()
                        let start = scanner.index
                        let head = try ObjectHead.scan(&scanner)
                        itemSpans.append((start..<scanner.index, head))
                    }
                    return true
                }
                return false
            }
            scanner.skipWhitespace()
            guard scanner.isAtEnd else { throw scanner.error("unexpected data after the list") }
        }
        let itemKind = list.kind.hasSuffix("List") ? String(list.kind.dropLast(4)) : list.kind
        list.items.reserveCapacity(itemSpans.count)
        for (range, head) in itemSpans {
            var metadata = head.metadata
            var bytes = body.getSlice(at: body.readerIndex + range.lowerBound, length: range.count)!
            if !head.hasKind || !head.hasAPIVersion {
                metadata.kind = head.hasKind ? metadata.kind : itemKind
                metadata.apiVersion = head.hasAPIVersion ? metadata.apiVersion : list.apiVersion
                bytes = Self.withTypeMeta(bytes, head: head, kind: metadata.kind, apiVersion: metadata.apiVersion)
            }
            list.items.append(KubeObject(metadata: metadata, bytes: bytes))
        }
        return list
    }

    private static func withTypeMeta(_ item: ByteBuffer, head: ObjectHead, kind: String, apiVersion: String) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(item.readableBytes + kind.utf8.count + apiVersion.utf8.count + 32)
        out.writeStaticString("{")
        var separator = false
        if !head.hasKind {
            out.writeStaticString("\"kind\":")
            out.writeJSONString(kind)
            separator = true
        }
        if !head.hasAPIVersion {
            if separator { out.writeStaticString(",") }
            out.writeStaticString("\"apiVersion\":")
            out.writeJSONString(apiVersion)
        }
        var rest = item
        // Drop the opening brace; what follows is either members or the closing brace.
        rest.moveReaderIndex(forwardBy: 1)
        if !head.isEmpty { out.writeStaticString(",") }
        out.writeBuffer(&rest)
        return out
    }
}

extension ByteBuffer {
    /// Writes a JSON string literal.
    package mutating func writeJSONString(_ string: String) {
        writeStaticString("\"")
        var string = string
        string.withUTF8 { bytes in
            // Runs that need no escape go in whole: this is on the path of every event's attributes.
            var runStart = 0
            for (index, byte) in bytes.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                if runStart < index { writeBytes(UnsafeBufferPointer(rebasing: bytes[runStart..<index])) }
                switch byte {
                case UInt8(ascii: "\""): writeStaticString("\\\"")
                case UInt8(ascii: "\\"): writeStaticString("\\\\")
                case UInt8(ascii: "\n"): writeStaticString("\\n")
                case UInt8(ascii: "\r"): writeStaticString("\\r")
                case UInt8(ascii: "\t"): writeStaticString("\\t")
                default:
                    let hex = Array("0123456789abcdef".utf8)
                    writeBytes([0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
                }
                runStart = index + 1
            }
            if runStart < bytes.count { writeBytes(UnsafeBufferPointer(rebasing: bytes[runStart...])) }
        }
        writeStaticString("\"")
    }
}

import NIOCore

/// Edits of an object's bytes that cut or replace spans instead of decoding and encoding the
/// object again: every change of every object passes through here, and the rest of the bytes stay
/// exactly as the API server sent them.
public enum ObjectRewriter {
    /// What to change.
    public struct Edits: Sendable, Equatable {
        /// Leave out `metadata.managedFields` (large, and of no use downstream).
        public var dropManagedFields: Bool
        /// Replace the values of top-level `data` and `stringData` (a Secret's contents) by this
        /// marker, keeping the keys; nil leaves them.
        public var redactDataWith: String?

        public init(dropManagedFields: Bool = false, redactDataWith: String? = nil) {
            self.dropManagedFields = dropManagedFields
            self.redactDataWith = redactDataWith
        }

        public var isEmpty: Bool { !dropManagedFields && redactDataWith == nil }
    }

    /// The object with the edits applied; the same bytes when there is nothing to change.
    public static func apply(_ edits: Edits, to object: ByteBuffer) throws -> ByteBuffer {
        try rewrite(edits, object, readingManagedFields: false).bytes
    }

    /// An object after its edits, and what it said of its writers.
    public struct Rewritten: Sendable {
        public var bytes: ByteBuffer
        /// The entries of `metadata.managedFields`, in their order (read only when asked for).
        public var managedFields: [ManagedFieldsEntry]
    }

    /// The object with the edits applied, and with `readingManagedFields` the entries of its
    /// `metadata.managedFields`, in the same pass (before they are dropped).
    public static func rewrite(_ edits: Edits, _ object: ByteBuffer, readingManagedFields: Bool) throws -> Rewritten {
        guard !edits.isEmpty || readingManagedFields else { return Rewritten(bytes: object, managedFields: []) }
        var cuts: [(range: Range<Int>, replacement: [UInt8])] = []
        var managedFields: [ManagedFieldsEntry] = []
        try object.withUnsafeReadableBytes { raw in
            var scanner = JSONScanner(raw)
            // Objects arrive checked (`WatchFrame`, `ObjectList`): what follows the last member
            // to change need not be read.
            try scanner.visitMembers { key, scanner in
                if key == "metadata", edits.dropManagedFields || readingManagedFields {
                    scanner.skipWhitespace()
                    guard try scanner.peek() == UInt8(ascii: "{") else { return .skip }
                    let reader: ((inout JSONScanner) throws -> Void)? = readingManagedFields ? { managedFields = try ManagedFieldsEntry.scan(&$0) } : nil
                    try collectMemberCuts(&scanner, member: "managedFields", removing: edits.dropManagedFields, reading: reader, into: &cuts)
                    return edits.redactDataWith == nil ? .stop : .consumed
                }
                if key == "data" || key == "stringData", let marker = edits.redactDataWith {
                    scanner.skipWhitespace()
                    guard try scanner.peek() == UInt8(ascii: "{") else { return .skip }
                    var replacement: [UInt8] = []
                    var literal = ByteBuffer()
                    literal.writeJSONString(marker)
                    replacement = Array(buffer: literal)
                    try scanner.forEachMember(depth: 1) { _, scanner in
                        scanner.skipWhitespace()
                        let start = scanner.index
                        try scanner.skipValue(depth: 2)
                        cuts.append((start..<scanner.index, replacement))
                        return true
                    }
                    return .consumed
                }
                return .skip
            }
        }
        guard !cuts.isEmpty else { return Rewritten(bytes: object, managedFields: managedFields) }
        var out = ByteBuffer()
        out.reserveCapacity(object.readableBytes)
        var position = 0
        let base = object.readerIndex
        for cut in cuts.sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) {
            if cut.range.lowerBound > position {
                var slice = object.getSlice(at: base + position, length: cut.range.lowerBound - position)!
                out.writeBuffer(&slice)
            }
            out.writeBytes(cut.replacement)
            position = cut.range.upperBound
        }
        if object.readableBytes > position {
            var rest = object.getSlice(at: base + position, length: object.readableBytes - position)!
            out.writeBuffer(&rest)
        }
        return Rewritten(bytes: out, managedFields: managedFields)
    }

    /// Finds the member `member` of the object at the scanner; `reading` reads its value (else it
    /// is skipped) and with `removing` the cut that removes it together with one adjacent comma
    /// is recorded, so the object stays valid JSON.
    private static func collectMemberCuts(_ scanner: inout JSONScanner, member name: StaticString, removing: Bool,
                                          reading: ((inout JSONScanner) throws -> Void)?,
                                          into cuts: inout [(range: Range<Int>, replacement: [UInt8])]) throws {
        scanner.skipWhitespace()
        let open = scanner.index
        var members: [(keyStart: Int, valueEnd: Int, matches: Bool)] = []
        var keyStart = open + 1
        try scanner.forEachMember(depth: 1) { key, scanner in
            let matches = key == name
            if matches, let reading {
                try reading(&scanner)
            } else {
                try scanner.skipValue(depth: 2)
            }
            members.append((keyStart, scanner.index, matches))
            // The next key starts after the comma that follows this value.
            var probe = scanner
            probe.skipWhitespace()
            keyStart = probe.index + 1
            return true
        }
        guard removing else { return }
        guard let index = members.firstIndex(where: \.matches) else { return }
        let member = members[index]
        // The key's opening quote: skip whitespace before it.
        var start = member.keyStart
        while start < scanner.base.count, scanner.base[start] != UInt8(ascii: "\"") { start += 1 }
        if index + 1 < members.count {
            // Remove "key": value, up to the next key.
            var end = members[index + 1].keyStart
            while end < scanner.base.count, scanner.base[end] != UInt8(ascii: "\"") { end += 1 }
            cuts.append((start..<end, []))
        } else if index > 0 {
            // The last member: remove the comma before it.
            cuts.append((members[index - 1].valueEnd..<member.valueEnd, []))
        } else {
            cuts.append((start..<member.valueEnd, []))
        }
    }
}

/// One entry of `metadata.managedFields`: a field manager, how it wrote (`Update`, `Apply`), to
/// which subresource, and when (RFC 3339 in whole seconds, as the API server writes it).
public struct ManagedFieldsEntry: Sendable, Equatable {
    public var manager: String
    public var operation: String
    public var subresource: String?
    public var time: String?

    public init(manager: String, operation: String, subresource: String? = nil, time: String? = nil) {
        self.manager = manager
        self.operation = operation
        self.subresource = subresource
        self.time = time
    }

    /// The entries of a `managedFields` array at the scanner (skipping `fieldsV1`, the bulk).
    static func scan(_ scanner: inout JSONScanner) throws -> [ManagedFieldsEntry] {
        scanner.skipWhitespace()
        guard try scanner.peek() == UInt8(ascii: "[") else {
            try scanner.skipValue(depth: 2)
            return []
        }
        var entries: [ManagedFieldsEntry] = []
        try scanner.forEachElement(depth: 2) { scanner in
            guard try scanner.peek() == UInt8(ascii: "{") else { return try scanner.skipValue(depth: 3) }
            var entry = ManagedFieldsEntry(manager: "", operation: "")
            try scanner.forEachMember(depth: 3) { key, scanner in
                if key == "manager" { entry.manager = try scanner.readOptionalString() ?? ""; return true }
                if key == "operation" { entry.operation = try scanner.readOptionalString() ?? ""; return true }
                if key == "subresource" { entry.subresource = try scanner.readOptionalString(); return true }
                if key == "time" { entry.time = try scanner.readOptionalString(); return true }
                return false
            }
            entries.append(entry)
        }
        return entries
    }

    /// Who made the object's latest write, as far as its `managedFields` tell: the entries with
    /// the newest `time`. Times have whole seconds, so two writers within one second tie, and
    /// then every one of them is returned (in the order the API server keeps them): the object
    /// alone cannot say which of them wrote last.
    public static func newest(_ entries: [ManagedFieldsEntry]) -> [ManagedFieldsEntry] {
        guard let newest = entries.compactMap(\.time).max() else { return entries.count == 1 ? entries : [] }
        return entries.filter { $0.time == newest }
    }
}

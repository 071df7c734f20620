import KubeTestServer

/// Compares what the test server sent with what a real kube-apiserver sent: the same keys in the
/// same order, the same types, and the same values except where a value is volatile (uids,
/// resourceVersions, timestamps), where only the type must match.
public struct JSONShape {
    /// Keys whose values differ between any two runs.
    public static let volatileKeys: Set<String> = [
        "uid", "resourceVersion", "creationTimestamp", "time", "deletionTimestamp", "lastTransitionTime", "continue",
        "buildDate", "serverAddress", "storageVersionHash", "renewTime", "acquireTime",
        // The fields a manager owns: a set of field paths, not schema.
        "fieldsV1",
    ]

    public var extraVolatileKeys: Set<String> = []
    /// Trimmed transcripts: arrays may hold more entries than the transcript kept.
    public var subset = false

    public init(extraVolatileKeys: Set<String> = [], subset: Bool = false) {
        self.extraVolatileKeys = extraVolatileKeys
        self.subset = subset
    }

    /// The differences found, as `path: what` lines; empty when the shapes agree.
    public func differences(expected: JSON, actual: JSON) -> [String] {
        var out: [String] = []
        compare(expected, actual, path: "$", volatile: false, into: &out)
        return out
    }

    private static func typeName(_ value: JSON) -> String {
        switch value {
        case .null: "null"
        case .bool: "bool"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    private func compare(_ expected: JSON, _ actual: JSON, path: String, volatile: Bool, into out: inout [String]) {
        guard Self.typeName(expected) == Self.typeName(actual) else {
            out.append("\(path): expected \(Self.typeName(expected)) \(expected.text.prefix(80)), got \(Self.typeName(actual)) \(actual.text.prefix(80))")
            return
        }
        if volatile {
            return
        }
        switch (expected, actual) {
        case (.object(let e), .object(let a)):
            let expectedKeys = e.map(\.0)
            let actualKeys = a.map(\.0)
            if expectedKeys != actualKeys {
                out.append("\(path): keys \(expectedKeys) expected, got \(actualKeys)")
            }
            for (key, value) in e {
                guard let other = a.first(where: { $0.0 == key })?.1 else { continue }
                let isVolatile = Self.volatileKeys.contains(key) || extraVolatileKeys.contains(key)
                compare(value, other, path: "\(path).\(key)", volatile: isVolatile, into: &out)
            }
        case (.array(let e), .array(let a)):
            if subset, let pairs = matchByIdentity(e, a) {
                for (i, j) in pairs {
                    compare(e[i], a[j], path: "\(path)[\(identity(of: e[i]) ?? String(i))]", volatile: false, into: &out)
                }
                if pairs.count != e.count {
                    let missing = e.indices.filter { i in !pairs.contains { $0.0 == i } }.map { identity(of: e[$0]) ?? String($0) }
                    out.append("\(path): entries missing: \(missing)")
                }
                return
            }
            if e.count != a.count {
                out.append("\(path): \(e.count) elements expected, got \(a.count)")
            }
            for (i, pair) in zip(e, a).enumerated() {
                compare(pair.0, pair.1, path: "\(path)[\(i)]", volatile: false, into: &out)
            }
        default:
            if expected != actual {
                out.append("\(path): expected \(expected.text.prefix(120)), got \(actual.text.prefix(120))")
            }
        }
    }

    /// What names an entry of a discovery list: its name, resource, version or group name.
    private func identity(of value: JSON) -> String? {
        if let name = value["name"]?.stringValue { return name }
        if let resource = value["resource"]?.stringValue { return resource }
        if let subresource = value["subresource"]?.stringValue { return subresource }
        if let version = value["version"]?.stringValue, value["resources"] != nil { return version }
        if let metadata = value["metadata"], metadata.isObject { return metadata["name"]?.stringValue ?? "" }
        return nil
    }

    /// Pairs each expected entry with the actual entry of the same identity, in increasing order.
    private func matchByIdentity(_ expected: [JSON], _ actual: [JSON]) -> [(Int, Int)]? {
        guard expected.allSatisfy({ identity(of: $0) != nil }) else { return nil }
        var pairs: [(Int, Int)] = []
        var next = 0
        for (i, entry) in expected.enumerated() {
            let id = identity(of: entry)
            if let j = actual[next...].firstIndex(where: { identity(of: $0) == id }) {
                pairs.append((i, j))
                next = j + 1
            }
        }
        return pairs
    }
}

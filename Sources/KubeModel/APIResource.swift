/// A resource of one group version: `apps/v1/deployments`, `core/v1/configmaps`.
public struct GroupVersionResource: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    /// Empty for the core group.
    public var group: String
    public var version: String
    /// The plural resource name.
    public var resource: String

    public init(group: String, version: String, resource: String) {
        self.group = group
        self.version = version
        self.resource = resource
    }

    /// Parses `apps/v1/deployments` or `core/v1/configmaps` (also `v1/configmaps`).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        switch parts.count {
        case 2 where !parts[0].isEmpty && !parts[1].isEmpty:
            self.init(group: "", version: parts[0], resource: parts[1])
        case 3 where !parts[1].isEmpty && !parts[2].isEmpty:
            self.init(group: parts[0] == "core" ? "" : parts[0], version: parts[1], resource: parts[2])
        default:
            return nil
        }
    }

    public var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }

    /// `core/v1/configmaps`: the form configuration filters and logs use.
    public var description: String { "\(group.isEmpty ? "core" : group)/\(version)/\(resource)" }

    /// `/api/v1` or `/apis/GROUP/VERSION`.
    public var groupVersionPath: String { group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)" }

    /// The collection's path, namespaced or cluster-wide.
    public func collectionPath(namespace: String?) -> String {
        if let namespace { return "\(groupVersionPath)/namespaces/\(PathEscaping.escape(namespace))/\(resource)" }
        return "\(groupVersionPath)/\(resource)"
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.group, lhs.resource, lhs.version) < (rhs.group, rhs.resource, rhs.version)
    }
}

/// A served resource as discovery describes it.
public struct APIResource: Hashable, Sendable, Codable {
    public var gvr: GroupVersionResource
    public var kind: String
    public var singular: String
    public var namespaced: Bool
    public var verbs: [String]
    public var shortNames: [String]
    public var categories: [String]
    /// Whether this version is the group's preferred one (the first listed).
    public var isPreferredVersion: Bool

    public init(gvr: GroupVersionResource, kind: String, singular: String = "", namespaced: Bool, verbs: [String],
                shortNames: [String] = [], categories: [String] = [], isPreferredVersion: Bool) {
        self.gvr = gvr
        self.kind = kind
        self.singular = singular
        self.namespaced = namespaced
        self.verbs = verbs
        self.shortNames = shortNames
        self.categories = categories
        self.isPreferredVersion = isPreferredVersion
    }

    public var group: String { gvr.group }
    public var version: String { gvr.version }
    public var resource: String { gvr.resource }

    /// Whether the bridge can follow it: it must support both list and watch.
    public var isWatchable: Bool { verbs.contains("list") && verbs.contains("watch") }
}

package enum PathEscaping {
    /// Escapes a path segment; Kubernetes names are DNS-like, so this rarely changes anything.
    package static func escape(_ segment: String) -> String {
        PercentEncoding.encode(segment) { unreserved($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "@") }
    }

    /// Escapes a query value (RFC 3986 unreserved characters stay).
    package static func escapeQuery(_ value: String) -> String {
        PercentEncoding.encode(value, keeping: unreserved)
    }

    private static func unreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }
}

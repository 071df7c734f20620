/// A `group/version/resource` pattern.
public struct GVRPattern: Sendable {
    public var group: String
    public var version: String
    public var resource: String

    public init?(_ text: String) {
        if text == "*" {
            (group, version, resource) = ("*", "*", "*")
            return
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        group = parts[0] == "core" ? "" : parts[0]
        version = parts[1]
        resource = parts[2]
    }

    public func matches(_ gvr: GroupVersionResource) -> Bool {
        Glob.matches(group, gvr.group) && Glob.matches(version, gvr.version) && Glob.matches(resource, gvr.resource)
    }
}

public enum Glob {
    /// `*` matches any run of characters, everything else itself.
    public static func matches(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8)
        let t = Array(text.utf8)
        var pi = 0
        var ti = 0
        var star = -1
        var mark = 0
        while ti < t.count {
            if pi < p.count, p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = ti
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

extension Glob {
    /// Whether a namespace passes include and exclude patterns; an empty include list takes every
    /// namespace, and cluster-scoped objects (no namespace) always pass.
    public static func admits(namespace: String?, include: [String], exclude: [String]) -> Bool {
        guard let namespace else { return true }
        if !include.isEmpty, !include.contains(where: { matches($0, namespace) }) { return false }
        return !exclude.contains { matches($0, namespace) }
    }
}

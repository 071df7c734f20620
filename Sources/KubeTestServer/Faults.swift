import NIOCore

/// The kind of request a fault applies to.
public enum RequestVerb: String, Sendable, Hashable, CaseIterable {
    case get, list, watch, create, update, patch, delete, deletecollection
    /// `/api`, `/apis` and group-version documents.
    case discovery
}

/// What the server does instead of (or before) answering normally.
public enum FaultAction: Sendable, Hashable {
    /// An error Status with this code and reason; `retryAfterSeconds` also sets the Retry-After header.
    case status(code: Int, reason: String, message: String, retryAfterSeconds: Int? = nil)
    /// 403 Forbidden, worded as RBAC words it.
    case forbidden
    /// 429 TooManyRequests with Retry-After, as API Priority and Fairness answers.
    case tooManyRequests(retryAfterSeconds: Int)
    /// 500 with a body that is not JSON, as a proxy in front of the server might send.
    case nonJSONError(code: Int, body: String)
    /// The connection is closed without an answer.
    case dropConnection
    /// The answer comes this much later.
    case delay(TimeAmount)
    /// The request waits, unanswered, until `KubeTestServer.releaseHeld()`.
    case hold
    /// A watch starts (headers sent) and then sends nothing at all, not even bookmarks.
    case stallWatch
    /// A watch sends this many events, then half of the next line, then the connection ends:
    /// abruptly (`cleanEnd: false`), or with a well-formed end of the chunked body (`cleanEnd: true`).
    case cutWatchMidLine(afterEvents: Int, cleanEnd: Bool)
    /// A watch sends this many events, then a line that is not JSON, then carries on.
    case malformedWatchLine(afterEvents: Int)
}

/// A fault switch: which requests it matches and what happens to them.
public struct FaultRule: Sendable {
    public var verbs: Set<RequestVerb>
    /// Resource plural to match; nil matches every resource.
    public var resource: String?
    /// Group to match; nil matches every group.
    public var group: String?
    public var namespace: String?
    /// Matches only requests whose body contains this text (a create of one kind of object, say).
    public var bodyContains: String?
    public var action: FaultAction
    /// How many requests it applies to; nil for as long as it is installed.
    public var remaining: Int?

    public init(
        verbs: Set<RequestVerb> = Set(RequestVerb.allCases), resource: String? = nil, group: String? = nil,
        namespace: String? = nil, bodyContains: String? = nil, action: FaultAction, count: Int? = nil
    ) {
        self.bodyContains = bodyContains
        self.verbs = verbs
        self.resource = resource
        self.group = group
        self.namespace = namespace
        self.action = action
        self.remaining = count
    }

    func matches(verb: RequestVerb, definition: ResourceDefinition?, group requestGroup: String?, namespace: String?, body: [UInt8] = []) -> Bool {
        guard verbs.contains(verb) else { return false }
        if let resource, definition?.resource != resource { return false }
        if let group, (definition?.group ?? requestGroup) != group { return false }
        if let wanted = self.namespace, wanted != namespace { return false }
        if let bodyContains, !String(decoding: body, as: UTF8.self).contains(bodyContains) { return false }
        return true
    }
}

/// A handle to remove an installed fault.
public struct FaultID: Sendable, Hashable {
    let value: Int
}

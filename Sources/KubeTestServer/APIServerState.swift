import Foundation
import NIOCore
import NIOHTTP1

/// A user the test server knows, and what it may do.
public struct TestUser: Sendable {
    public var name: String
    public var token: String
    /// Decides whether the user may perform a verb on a resource, in a namespace (nil: cluster-wide).
    public var authorize: @Sendable (RequestVerb, ResourceDefinition, String?) -> Bool

    public init(name: String, token: String, authorize: @escaping @Sendable (RequestVerb, ResourceDefinition, String?) -> Bool) {
        self.name = name
        self.token = token
        self.authorize = authorize
    }

    public static func admin(token: String) -> TestUser { TestUser(name: "admin", token: token) { _, _, _ in true } }
    public static func viewer(token: String) -> TestUser { TestUser(name: "viewer", token: token) { _, _, _ in false } }
}

struct WatchPlan {
    var store: ResourceStore
    var definition: ResourceDefinition
    var namespace: String?
    var labelSelector: LabelSelector?
    var fieldSelector: FieldSelector?
    /// Objects sent first as synthetic ADDED events (initial events), in key order.
    var initialObjects: [StoredObject]
    var sendInitialEventsEnd: Bool
    var startSequence: Int
    var startRevision: Int64
    var allowBookmarks: Bool
    var timeout: TimeAmount?
    /// A single ERROR line and then the end of the stream (410 Expired).
    var errorLine: JSON?
    var fault: FaultAction?
}

enum Outcome {
    case respond(APIResponse)
    case watch(WatchPlan)
    case drop
    case delayed(TimeAmount, APIRequest)
    case held(APIRequest)
}

/// Everything the test API server knows. It lives on one event loop, as one etcd with one watch
/// cache would, so no lock is needed: every access happens on that loop.
final class APIServerState {
    let loop: EventLoop
    let options: KubeTestServer.Options
    var port = 0
    var revision: Int64 = 1
    var compactedRevision: Int64 = 0
    var stores: [String: ResourceStore] = [:]
    /// Served resources by group version, rebuilt when CRDs change.
    private(set) var served: [String: [String: ResourceDefinition]] = [:]
    private(set) var groups: [GroupDefinition] = []
    var users: [String: TestUser] = [:]
    var certificateUsers: [String: TestUser] = [:]
    var faults: [(FaultID, FaultRule)] = []
    /// Requests a `hold` fault stopped, each resumed by its closure.
    var held: [() -> Void] = []
    var nextFaultID = 0
    var requestLog: [String] = []
    var discoveryCache: [String: (body: [UInt8], etag: String)] = [:]
    let flowSchemaUIDs: [String: (String, String)]
    var allSessions: [ObjectIdentifier: WatchSession] = [:]
    /// While true, bookmarks that fall due wait (see `KubeTestServer.pauseBookmarks`).
    var bookmarksPaused = false
    var connections: [ObjectIdentifier: ServedConnection] = [:]
    var clock: @Sendable () -> Date = { Date() }
    /// Generation runs in progress (control API).
    var generating = 0
    var history: [KubeTestServer.HistoryEntry] = []

    init(loop: EventLoop, options: KubeTestServer.Options) {
        self.loop = loop
        self.options = options
        self.flowSchemaUIDs = [
            "admin": ("3ff6e8eb-8358-4f8a-980c-ae3756963948", "6c9f5cf4-89b6-46ba-b595-67a069d6d096"),
            "viewer": ("17c1cca0-9904-4d43-ab05-b3459754874d", "50738084-6ff2-415f-a218-ac8da833bcf8"),
        ]
        rebuildServed()
    }

    // MARK: Catalog

    func rebuildServed() {
        var groups = BuiltinCatalog.groups
        let crds = stores["customresourcedefinitions.apiextensions.k8s.io"]?.sortedKeys.compactMap {
            stores["customresourcedefinitions.apiextensions.k8s.io"]?.objects[$0]
        } ?? []
        var customGroups: [String: GroupDefinition] = [:]
        for crd in crds where isEstablished(crd.value) && crd.value["metadata"]?["deletionTimestamp"] == nil {
            for definition in Self.definitions(ofCRD: crd.value) {
                var group = customGroups[definition.group] ?? GroupDefinition(name: definition.group, versions: [], resources: [])
                if !group.versions.contains(definition.version) { group.versions.append(definition.version) }
                group.resources.append(definition)
                customGroups[definition.group] = group
            }
        }
        for name in customGroups.keys.sorted() {
            guard var group = customGroups[name] else { continue }
            group.versions = Self.sortedByKubeVersionPriority(group.versions)
            if let existing = groups.firstIndex(where: { $0.name == name }) {
                groups[existing].resources += group.resources
                groups[existing].versions += group.versions.filter { !groups[existing].versions.contains($0) }
            } else {
                groups.append(group)
            }
        }
        self.groups = groups
        var served: [String: [String: ResourceDefinition]] = [:]
        for group in groups {
            for definition in group.resources {
                served[definition.groupVersion, default: [:]][definition.resource] = definition
            }
        }
        self.served = served
        discoveryCache = [:]
    }

    /// Kubernetes' version priority: GA before beta before alpha, higher numbers first.
    static func sortedByKubeVersionPriority(_ versions: [String]) -> [String] {
        func key(_ v: String) -> (Int, Int, Int) {
            let scanner = Array(v.dropFirst())
            var major = 0
            var i = 0
            while i < scanner.count, let d = scanner[i].wholeNumberValue { major = major * 10 + d; i += 1 }
            let rest = String(scanner[i...])
            if rest.isEmpty { return (3, major, 0) }
            let stage = rest.hasPrefix("beta") ? 2 : rest.hasPrefix("alpha") ? 1 : 0
            let minor = Int(rest.drop(while: { !$0.isNumber })) ?? 0
            return (stage, major, minor)
        }
        return versions.sorted { key($0) > key($1) }
    }

    func isEstablished(_ crd: JSON) -> Bool {
        (crd["status"]?["conditions"]?.arrayValue ?? []).contains {
            $0["type"]?.stringValue == "Established" && $0["status"]?.stringValue == "True"
        }
    }

    static func definitions(ofCRD crd: JSON) -> [ResourceDefinition] {
        guard let spec = crd["spec"], let group = spec["group"]?.stringValue,
              let plural = spec["names"]?["plural"]?.stringValue, let kind = spec["names"]?["kind"]?.stringValue
        else { return [] }
        let singular = spec["names"]?["singular"]?.stringValue ?? kind.lowercased()
        let shortNames = spec["names"]?["shortNames"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let categories = spec["names"]?["categories"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let namespaced = spec["scope"]?.stringValue != "Cluster"
        var result: [ResourceDefinition] = []
        for version in spec["versions"]?.arrayValue ?? [] where version["served"] == .bool(true) {
            guard let name = version["name"]?.stringValue else { continue }
            var subresources: [SubresourceDefinition] = []
            if version["subresources"]?["status"] != nil {
                subresources.append(.init("status", kind: kind, group: group, version: name, verbs: ["get", "patch", "update"]))
            }
            if version["subresources"]?["scale"] != nil {
                subresources.append(.init("scale", kind: "Scale", group: "autoscaling", version: "v1", verbs: ["get", "patch", "update"]))
            }
            result.append(ResourceDefinition(
                group: group, version: name, resource: plural, singular: singular, kind: kind, namespaced: namespaced,
                verbs: ResourceDefinition.customResourceVerbs, shortNames: shortNames, categories: categories,
                subresources: subresources, isCustom: true, storage: "\(plural).\(group)", tracksGeneration: true))
        }
        return result
    }

    func definition(group: String, version: String, resource: String) -> ResourceDefinition? {
        served[group.isEmpty ? version : "\(group)/\(version)"]?[resource]
    }

    func store(for definition: ResourceDefinition) -> ResourceStore {
        if let store = stores[definition.storage], !store.isRemoved { return store }
        let store = ResourceStore(storage: definition.storage)
        stores[definition.storage] = store
        return store
    }

    var now: Date { clock() }

    // MARK: Request entry

    func handle(_ request: APIRequest) -> Outcome {
        let user: TestUser?
        if let tlsUser = request.tlsUser, let known = certificateUsers[tlsUser] {
            user = known
        } else if let header = request.headers.first(name: "authorization"), header.hasPrefix("Bearer ") {
            user = users[String(header.dropFirst(7))]
        } else {
            user = nil
        }
        guard let user else {
            var response = APIResponse.status(401, reason: "Unauthorized", message: "Unauthorized")
            response.flowControlHeaders = false
            return .respond(response)
        }
        if request.path.hasPrefix(Self.controlPrefix) {
            return .respond(control(request, user: user))
        }
        let route = Route(path: request.path, state: self)
        let verb = route.verb(method: request.method, query: request.query)
        if let (index, rule) = faults.enumerated().first(where: { $0.element.1.matches(verb: verb, definition: route.definition, group: route.group, namespace: route.namespace, body: request.body) }).map({ ($0.offset, $0.element.1) }) {
            if let remaining = rule.remaining {
                if remaining <= 1 { faults.remove(at: index) } else { faults[index].1.remaining = remaining - 1 }
            }
            if let outcome = apply(fault: rule.action, request: request, route: route, verb: verb, user: user) {
                return outcome
            }
        }
        return handle(request, route: route, verb: verb, user: user, fault: nil)
    }

    private func apply(fault: FaultAction, request: APIRequest, route: Route, verb: RequestVerb, user: TestUser) -> Outcome? {
        switch fault {
        case .status(let code, let reason, let message, let retryAfter):
            var response = APIResponse.status(code, reason: reason, message: message,
                                              details: retryAfter.map { .object([("retryAfterSeconds", .int($0))]) })
            if let retryAfter { response.extraHeaders.append(("Retry-After", String(retryAfter))) }
            return .respond(response)
        case .forbidden:
            return .respond(forbidden(user: user, verb: verb, route: route))
        case .tooManyRequests(let seconds):
            var response = APIResponse.status(
                429, reason: "TooManyRequests", message: "Too many requests, please try again later.",
                details: .object([("retryAfterSeconds", .int(seconds))]))
            response.extraHeaders.append(("Retry-After", String(seconds)))
            return .respond(response)
        case .nonJSONError(let code, let body):
            return .respond(APIResponse(code: code, contentType: "text/html", body: Array(body.utf8), flowControlHeaders: false))
        case .dropConnection:
            return .drop
        case .delay(let amount):
            return .delayed(amount, request)
        case .hold:
            return .held(request)
        case .stallWatch, .cutWatchMidLine, .malformedWatchLine:
            guard verb == .watch else { return nil }
            let outcome = handle(request, route: route, verb: verb, user: user, fault: fault)
            return outcome
        }
    }

    /// Continues a request whose fault was a delay.
    func resume(_ request: APIRequest) -> Outcome {
        let route = Route(path: request.path, state: self)
        let verb = route.verb(method: request.method, query: request.query)
        let user = request.headers.first(name: "authorization").flatMap { users[String($0.dropFirst(7))] }
            ?? request.tlsUser.flatMap { certificateUsers[$0] }
        guard let user else { return .respond(.status(401, reason: "Unauthorized", message: "Unauthorized")) }
        return handle(request, route: route, verb: verb, user: user, fault: nil)
    }

    private func handle(_ request: APIRequest, route: Route, verb: RequestVerb, user: TestUser, fault: FaultAction?) -> Outcome {
        switch route.kind {
        case .root:
            let paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
            return .respond(.json(200, .object([("paths", .array(paths.map { .string($0) }))])))
        case .health:
            return .respond(APIResponse(code: 200, contentType: "text/plain; charset=utf-8", body: Array("ok".utf8), nosniff: true))
        case .version:
            return .respond(versionResponse())
        case .apiRoot:
            return .respond(discoveryRoot(core: true, accept: request.headers.first(name: "accept"), ifNoneMatch: request.headers.first(name: "if-none-match")))
        case .apisRoot:
            return .respond(discoveryRoot(core: false, accept: request.headers.first(name: "accept"), ifNoneMatch: request.headers.first(name: "if-none-match")))
        case .group(let name):
            return .respond(groupDocument(name))
        case .groupVersion(let group, let version):
            return .respond(resourceList(group: group, version: version))
        case .notFoundJSON:
            return .respond(.status(404, reason: "NotFound", message: "the server could not find the requested resource", details: .object([])))
        case .notFoundPlain:
            return .respond(.plainNotFound)
        case .resource(let target):
            let definition = target.definition
            if target.subresource != nil, target.subresource != "status" {
                return .respond(.status(404, reason: "NotFound", message: "the server could not find the requested resource", details: .object([])))
            }
            guard definition.verbs.contains(verb.rawValue) || (target.subresource == "status" && [.get, .update, .patch].contains(verb)) else {
                return .respond(.status(405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource", details: .object([])))
            }
            guard user.authorize(verb, definition, target.namespace) else {
                return .respond(forbidden(user: user, verb: verb, route: route))
            }
            switch verb {
            case .list: return .respond(list(target, query: request.query))
            case .watch: return watch(target, query: request.query, fault: fault)
            case .get: return .respond(get(target))
            case .create: return .respond(create(target, request: request))
            case .update: return .respond(update(target, request: request))
            case .patch: return .respond(patch(target, request: request))
            case .delete: return .respond(delete(target, request: request))
            case .deletecollection: return .respond(deleteCollection(target, query: request.query))
            case .discovery: return .respond(.plainNotFound)
            }
        }
    }

    func forbidden(user: TestUser, verb: RequestVerb, route: Route) -> APIResponse {
        let definition = route.definition
        let resource = definition?.resource ?? ""
        let group = definition?.group ?? ""
        let scope = route.namespace.map { "in the namespace \(ObjectRules.quoted($0))" } ?? "at the cluster scope"
        let shown = route.target?.subresource.map { "\(resource)/\($0)" } ?? resource
        let subject = route.target?.name.map { "\(definition?.qualifiedResource ?? resource) \(ObjectRules.quoted($0))" }
            ?? (definition?.qualifiedResource ?? resource)
        let message = "\(subject) is forbidden: User \(ObjectRules.quoted(user.name)) cannot \(verb.rawValue) resource \(ObjectRules.quoted(shown)) in API group \(ObjectRules.quoted(group)) \(scope)"
        var response = APIResponse.status(403, reason: "Forbidden", message: message,
                                          details: ObjectRules.details(name: route.target?.name, definition: definition))
        response.nosniff = true
        return response
    }

    func versionResponse() -> APIResponse {
        let version: JSON = .object([
            ("major", .string("1")), ("minor", .string("36")), ("emulationMajor", .string("1")),
            ("emulationMinor", .string("36")), ("minCompatibilityMajor", .string("1")), ("minCompatibilityMinor", .string("35")),
            ("gitVersion", .string("v1.36.2")), ("gitCommit", .string("98b35193b2ac7a23a673325f5e9b830ecd5ba406")),
            ("gitTreeState", .string("clean")), ("buildDate", .string("2026-11-24T20:25:18Z")),
            ("goVersion", .string("go1.27.3")), ("compiler", .string("gc")), ("platform", .string("linux/amd64")),
        ])
        return APIResponse(code: 200, body: Array(version.prettyPrinted().utf8))
    }

    // MARK: Administration

    /// etcd compaction at the current revision; `rollWatchCache` also drops the watch cache's window,
    /// which is what makes watches from older revisions answer 410.
    func compact(rollWatchCache: Bool) {
        compactedRevision = revision
        for store in stores.values {
            if rollWatchCache {
                store.log.trim(through: revision, keepFrom: store.oldestWatchCursor)
                store.log.raiseFloor(to: revision)
            }
        }
    }
}

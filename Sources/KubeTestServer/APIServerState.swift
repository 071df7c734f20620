import Crypto
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

struct APIRequest {
    var method: HTTPMethod
    var path: String
    var query: [String: String]
    var headers: HTTPHeaders
    var body: [UInt8]
    var tlsUser: String?
}

struct APIResponse {
    var code: Int
    var contentType = "application/json"
    var cacheControl = "no-cache, private"
    var extraHeaders: [(String, String)] = []
    var body: [UInt8]
    var flowControlHeaders = true
    var nosniff = false

    static func json(_ code: Int, _ value: JSON) -> APIResponse {
        APIResponse(code: code, body: value.serialized() + [0x0A])
    }

    static func status(_ code: Int, reason: String?, message: String?, details: JSON? = nil, continueToken: String? = nil) -> APIResponse {
        .json(code, ObjectRules.status(code: code, reason: reason, message: message, details: details, continueToken: continueToken))
    }

    static let plainNotFound = APIResponse(
        code: 404, contentType: "text/plain; charset=utf-8", body: Array("404 page not found\n".utf8), nosniff: true)
}

/// What a watch request turns into once it is accepted.
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

    // MARK: Reads

    func get(_ target: ResourceTarget) -> APIResponse {
        guard let name = target.name else { return .plainNotFound }
        let store = store(for: target.definition)
        guard let object = store.objects[StoredObject.key(namespace: target.namespace, name: name)] else {
            return notFound(target.definition, name: name)
        }
        return APIResponse(code: 200, body: render(object, as: target.definition) + [0x0A])
    }

    func notFound(_ definition: ResourceDefinition, name: String) -> APIResponse {
        .status(404, reason: "NotFound", message: "\(definition.qualifiedResource) \(ObjectRules.quoted(name)) not found",
                details: ObjectRules.details(name: name, definition: definition))
    }

    /// The object's bytes as the given group version serves it.
    func render(_ object: StoredObject, as definition: ResourceDefinition) -> [UInt8] {
        if object.value["apiVersion"]?.stringValue == definition.apiVersion { return object.bytes }
        var value = object.value
        value["apiVersion"] = .string(definition.apiVersion)
        if definition.isCustom {
            return value.sortedKeys().serialized()
        }
        return ObjectRules.canonical(value, definition: definition).serialized()
    }

    /// A typed list item: the object without kind and apiVersion. Typed objects are stored with
    /// those two keys first, so cutting the prefix off the bytes avoids serializing again.
    func renderListItem(_ object: StoredObject, as definition: ResourceDefinition) -> [UInt8] {
        let bytes = render(object, as: definition)
        if definition.isCustom { return bytes }
        var prefix: [UInt8] = Array(#"{"kind":"#.utf8)
        JSON.writeString(definition.kind, to: &prefix)
        prefix += Array(#","apiVersion":"#.utf8)
        JSON.writeString(definition.apiVersion, to: &prefix)
        prefix.append(UInt8(ascii: ","))
        if bytes.count > prefix.count, bytes.starts(with: prefix) {
            return [UInt8(ascii: "{")] + bytes[prefix.count...]
        }
        var value = object.value
        value["kind"] = nil
        value["apiVersion"] = nil
        return value.serialized()
    }

    struct ContinueToken {
        var revision: Int64
        var start: String
    }

    static func encodeContinue(revision: Int64, start: String) -> String {
        let json: JSON = .object([("v", .string("meta.k8s.io/v1")), ("rv", .int(revision)), ("start", .string(start))])
        return base64(json.serialized(), urlSafe: true, padded: false)
    }

    static func decodeContinue(_ token: String) -> ContinueToken? {
        guard let bytes = base64Decode(token), let json = try? JSON(parsing: bytes),
              json["v"]?.stringValue == "meta.k8s.io/v1", let rv = json["rv"]?.int64Value,
              let start = json["start"]?.stringValue
        else { return nil }
        return ContinueToken(revision: rv, start: start)
    }

    func list(_ target: ResourceTarget, query: [String: String]) -> APIResponse {
        let definition = target.definition
        let store = store(for: definition)
        var labelSelector: LabelSelector?
        var fieldSelector: FieldSelector?
        do {
            if let text = query["labelSelector"], !text.isEmpty { labelSelector = try LabelSelector(parsing: text) }
            if let text = query["fieldSelector"], !text.isEmpty { fieldSelector = try FieldSelector(parsing: text) }
        } catch let error as SelectorError {
            return .status(400, reason: "BadRequest", message: "unable to parse requirement: \(ObjectRules.quoted(error.text))")
        } catch {
            return .status(400, reason: "BadRequest", message: "\(error)")
        }
        let limit = query["limit"].flatMap(Int.init).flatMap { $0 > 0 ? $0 : nil }
        var snapshotRevision = revision
        var startKey: String?
        if let token = query["continue"], !token.isEmpty {
            guard let decoded = Self.decodeContinue(token) else {
                return .status(400, reason: "BadRequest", message: "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
            }
            if decoded.revision < compactedRevision || decoded.revision < store.log.floorRevision {
                let fresh = Self.encodeContinue(revision: -1, start: String(decoded.start.dropFirst()))
                return .status(410, reason: "Expired", message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.", continueToken: fresh)
            }
            snapshotRevision = decoded.revision < 0 ? revision : decoded.revision
            startKey = decoded.start.hasPrefix("/") ? decoded.start : "/" + decoded.start
        } else if let rvText = query["resourceVersion"], !rvText.isEmpty {
            guard let rv = Int64(rvText), rv >= 0 else {
                return .status(400, reason: "BadRequest", message: "invalid resource version: resourceVersion: Invalid value: \(ObjectRules.quoted(rvText)): strconv.ParseUint: parsing \(ObjectRules.quoted(rvText)): invalid syntax")
            }
            let match = query["resourceVersionMatch"] ?? ""
            if rv > revision {
                return tooLargeResourceVersion(rv)
            }
            if match == "Exact" {
                if rv < compactedRevision || rv < store.log.floorRevision {
                    return .status(410, reason: "Expired", message: "The resourceVersion for the provided list is too old.")
                }
                snapshotRevision = rv
            }
        }
        let namespaceKeyPrefix = target.namespace.map { "/\($0)/" }
        var items: [[UInt8]] = []
        var lastKey: String?
        var remaining = 0
        var more = false
        let effectiveStart = startKey ?? namespaceKeyPrefix
        let snapshot = store.snapshot(at: snapshotRevision, after: effectiveStart)
        for object in snapshot {
            if let prefix = namespaceKeyPrefix, !object.key.hasPrefix(prefix) {
                if object.key > prefix { break }
                continue
            }
            if let labelSelector, !labelSelector.matches(object.labels) { continue }
            if let fieldSelector, !fieldSelector.matches(object) { continue }
            if let limit, items.count >= limit {
                more = true
                if labelSelector == nil, fieldSelector == nil, snapshot.overlay.isEmpty, let lastKey {
                    // Counting the rest by position, not by walking it: pages of large lists stay cheap.
                    let end = namespaceKeyPrefix.map { store.lowerBound($0 + "\u{10FFFF}") } ?? store.sortedKeys.count
                    remaining = end - store.lowerBound(lastKey) - 1
                    break
                }
                remaining += 1
                continue
            }
            items.append(renderListItem(object, as: definition))
            lastKey = object.key
        }
        var metadata: [(String, JSON)] = [("resourceVersion", .string(String(snapshotRevision)))]
        if more, let lastKey {
            metadata.append(("continue", .string(Self.encodeContinue(revision: snapshotRevision, start: lastKey + "\u{0}"))))
            if labelSelector == nil, fieldSelector == nil { metadata.append(("remainingItemCount", .int(remaining))) }
        } else if definition.isCustom {
            metadata.append(("continue", .string("")))
        }
        let listKind = "\(definition.kind)List"
        var head: JSON = .object([("kind", .string(listKind)), ("apiVersion", .string(definition.apiVersion)),
                                  ("metadata", .object(metadata))])
        if definition.isCustom { head = head.sortedKeys() }
        // Items are spliced in as bytes: serializing them again would cost as much as the list itself.
        var body: [UInt8] = []
        body.reserveCapacity(items.reduce(256) { $0 + $1.count + 1 })
        let itemsArray: [UInt8] = {
            var out: [UInt8] = [UInt8(ascii: "[")]
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out += item
            }
            out.append(UInt8(ascii: "]"))
            return out
        }()
        if definition.isCustom {
            // Alphabetical: apiVersion, items, kind, metadata.
            body += Array("{\"apiVersion\":".utf8)
            JSON.writeString(definition.apiVersion, to: &body)
            body += Array(",\"items\":".utf8) + itemsArray + Array(",\"kind\":".utf8)
            JSON.writeString(listKind, to: &body)
            body += Array(",\"metadata\":".utf8)
            (head["metadata"] ?? .object([])).write(to: &body)
            body.append(UInt8(ascii: "}"))
        } else {
            head.write(to: &body)
            body.removeLast()
            body += Array(",\"items\":".utf8) + itemsArray + [UInt8(ascii: "}")]
        }
        body.append(0x0A)
        return APIResponse(code: 200, body: body)
    }

    func tooLargeResourceVersion(_ rv: Int64) -> APIResponse {
        .status(504, reason: "Timeout", message: "Too large resource version: \(rv), current: \(revision)",
                details: .object([
                    ("causes", .array([.object([("reason", .string("ResourceVersionTooLarge")), ("message", .string("Too large resource version"))])])),
                    ("retryAfterSeconds", .int(1)),
                ]))
    }

    func watch(_ target: ResourceTarget, query: [String: String], fault: FaultAction?) -> Outcome {
        let definition = target.definition
        let store = store(for: definition)
        var labelSelector: LabelSelector?
        var fieldSelector: FieldSelector?
        do {
            if let text = query["labelSelector"], !text.isEmpty { labelSelector = try LabelSelector(parsing: text) }
            if let text = query["fieldSelector"], !text.isEmpty { fieldSelector = try FieldSelector(parsing: text) }
        } catch let error as SelectorError {
            return .respond(.status(400, reason: "BadRequest", message: "unable to parse requirement: \(ObjectRules.quoted(error.text))"))
        } catch {
            return .respond(.status(400, reason: "BadRequest", message: "\(error)"))
        }
        let rvText = query["resourceVersion"] ?? ""
        let sendInitialEvents = query["sendInitialEvents"].map { $0 == "true" || $0 == "1" }
        let allowBookmarks = query["allowWatchBookmarks"] == "true" || query["allowWatchBookmarks"] == "1"
        let timeout = query["timeoutSeconds"].flatMap(Int64.init).map { TimeAmount.seconds($0) }
        if sendInitialEvents != nil {
            if !options.watchListEnabled {
                return .respond(.status(422, reason: "Invalid", message: "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                                        details: .object([("kind", .string("ListOptions")), ("group", .string("meta.k8s.io")),
                                                          ("causes", .array([.object([("reason", .string("FieldValueForbidden")), ("message", .string("Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")), ("field", .string("sendInitialEvents"))])]))])))
            }
            if query["resourceVersionMatch"] != "NotOlderThan" {
                return .respond(.status(422, reason: "Invalid", message: "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
            }
        }
        var plan = WatchPlan(
            store: store, definition: definition, namespace: target.namespace, labelSelector: labelSelector,
            fieldSelector: fieldSelector, initialObjects: [], sendInitialEventsEnd: false, startSequence: store.log.endSequence,
            startRevision: revision, allowBookmarks: allowBookmarks, timeout: timeout, errorLine: nil, fault: fault)
        let wantsInitialEvents = sendInitialEvents ?? (rvText.isEmpty || rvText == "0")
        if !rvText.isEmpty {
            guard let rv = Int64(rvText), rv >= 0 else {
                return .respond(.status(500, reason: nil, message: "resourceVersion: Invalid value: \(ObjectRules.quoted(rvText)): strconv.ParseUint: parsing \(ObjectRules.quoted(rvText)): invalid syntax"))
            }
            if rv > revision, !wantsInitialEvents {
                return .respond(tooLargeResourceVersion(rv))
            }
            if !wantsInitialEvents, rv != 0 {
                let expired: Bool
                let message: String
                if definition.watchCached {
                    expired = rv < store.log.floorRevision
                    message = "too old resource version: \(rv) (\(store.log.oldestRevision ?? revision))"
                } else {
                    expired = rv < compactedRevision || rv < store.log.floorRevision
                    message = "The resourceVersion for the provided watch is too old."
                }
                if expired {
                    plan.errorLine = ObjectRules.status(code: 410, reason: "Expired", message: message)
                    return .watch(plan)
                }
                plan.startSequence = store.log.firstSequence(after: rv)
                plan.startRevision = rv
            }
        }
        if wantsInitialEvents {
            var initial: [StoredObject] = []
            let prefix = target.namespace.map { "/\($0)/" }
            for object in store.snapshot(at: revision, after: prefix) {
                if let prefix, !object.key.hasPrefix(prefix) { break }
                if let labelSelector, !labelSelector.matches(object.labels) { continue }
                if let fieldSelector, !fieldSelector.matches(object) { continue }
                initial.append(object)
            }
            plan.initialObjects = initial
            plan.sendInitialEventsEnd = allowBookmarks
            plan.startSequence = store.log.endSequence
            plan.startRevision = revision
        }
        return .watch(plan)
    }

    // MARK: Writes

    func manager(of request: APIRequest) -> String {
        let agent = request.headers.first(name: "user-agent") ?? ""
        let manager = agent.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        return manager.isEmpty ? "unknown" : manager
    }

    func parseBody(_ request: APIRequest, definition: ResourceDefinition) -> Result<JSON, APIResponse> {
        // This server reads JSON only. A protobuf or CBOR body gets 415, which client-go (1.32 and
        // later) answers by sending JSON from then on, as it does with a server that lacks them.
        let contentType = (request.headers.first(name: "content-type") ?? "application/json").split(separator: ";")[0].trimmingCharacters(in: .whitespaces)
        guard contentType == "application/json" || contentType.hasSuffix("+json") || contentType.isEmpty else {
            return .failure(.status(415, reason: "UnsupportedMediaType",
                                    message: "the body of the request was in an unknown format - accepted media types include: application/json"))
        }
        do {
            let value = try JSON(parsing: request.body)
            guard value.isObject else { throw JSONParseError(offset: 0, reason: "expected an object") }
            return .success(value)
        } catch {
            let text = String(decoding: request.body.prefix(30), as: UTF8.self)
            let message = "the object provided is unrecognized (must be of type \(definition.kind)): couldn't get version/kind; json parse error: unexpected end of JSON input (\(text) ...)"
            return .failure(.status(400, reason: "BadRequest", message: message))
        }
    }

    func invalid(_ definition: ResourceDefinition, name: String, causes: [ObjectRules.Cause]) -> APIResponse {
        let rendered = causes.map { "\($0.field): \($0.message)" }
        let list = rendered.count == 1 ? rendered[0] : "[" + rendered.joined(separator: ", ") + "]"
        return .status(422, reason: "Invalid", message: "\(definition.kind) \(ObjectRules.quoted(name)) is invalid: \(list)",
                       details: ObjectRules.details(name: name, definition: nil, kind: definition.kind, causes: causes))
    }

    func create(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard target.name == nil, target.subresource == nil else {
            return .status(405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource", details: .object([]))
        }
        var value: JSON
        switch parseBody(request, definition: definition) {
        case .success(let v): value = v
        case .failure(let response): return response
        }
        if let kind = value["kind"]?.stringValue, kind != definition.kind {
            return .status(400, reason: "BadRequest", message: "the object provided is unrecognized (must be of type \(definition.kind)): no kind \(ObjectRules.quoted(kind)) is registered for version \(ObjectRules.quoted(definition.apiVersion))")
        }
        var metadata = value["metadata"] ?? .object([])
        if metadata["name"]?.stringValue == nil, let prefix = metadata["generateName"]?.stringValue {
            metadata["name"] = .string(prefix + Self.randomSuffix())
        }
        if let bodyNamespace = metadata["namespace"]?.stringValue, let namespace = target.namespace, bodyNamespace != namespace {
            return .status(400, reason: "BadRequest", message: "the namespace of the provided object does not match the namespace sent on the request")
        }
        value["metadata"] = metadata
        let name = metadata["name"]?.stringValue ?? ""
        let causes = ObjectRules.validate(value, definition: definition)
        if !causes.isEmpty { return invalid(definition, name: name, causes: causes) }
        if definition.namespaced, let namespace = target.namespace, !namespaceExists(namespace) {
            let namespaces = BuiltinCatalog.groups[0].resources.first { $0.resource == "namespaces" }!
            return notFound(namespaces, name: namespace)
        }
        let store = store(for: definition)
        let key = StoredObject.key(namespace: definition.namespaced ? target.namespace : nil, name: name)
        if store.objects[key] != nil {
            return .status(409, reason: "AlreadyExists", message: "\(definition.qualifiedResource) \(ObjectRules.quoted(name)) already exists",
                           details: ObjectRules.details(name: name, definition: definition))
        }
        let time = ObjectRules.timestamp(now)
        value["apiVersion"] = .string(definition.apiVersion)
        value["kind"] = .string(definition.kind)
        if definition.isCustom, definition.hasStatus { value["status"] = nil }
        metadata = value["metadata"] ?? .object([])
        if definition.namespaced { metadata["namespace"] = .string(target.namespace ?? "default") }
        metadata["uid"] = .string(UUID().uuidString.lowercased())
        metadata["creationTimestamp"] = .string(time)
        metadata["resourceVersion"] = nil
        metadata["managedFields"] = nil
        metadata["deletionTimestamp"] = nil
        if definition.tracksGeneration { metadata["generation"] = .int(1) }
        if definition.resource == "namespaces" {
            var labels = metadata["labels"] ?? .object([])
            labels["kubernetes.io/metadata.name"] = .string(name)
            metadata["labels"] = labels
            value["spec"] = value["spec"] ?? .object([("finalizers", .array([.string("kubernetes")]))])
            value["status"] = .object([("phase", .string("Active"))])
        }
        value["metadata"] = metadata
        if definition.resource == "customresourcedefinitions" {
            value = prepareNewCRD(value)
        }
        let fields = ObjectRules.fieldsV1(of: value, subresource: nil)
        var withFields = value
        withFields["metadata"]?["managedFields"] = .array([
            ObjectRules.managedFieldsEntry(manager: manager(of: request), apiVersion: definition.apiVersion, time: time, fields: fields, subresource: nil),
        ])
        let object = commit(.added, value: withFields, store: store, definition: definition, previous: nil)
        if definition.resource == "customresourcedefinitions" {
            scheduleEstablish(name: name)
        }
        return APIResponse(code: 201, body: object.bytes + [0x0A])
    }

    func namespaceExists(_ namespace: String) -> Bool {
        stores["namespaces"]?.objects["/\(namespace)"] != nil
    }

    static func randomSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in alphabet.randomElement()! })
    }

    /// Stores a change: a new resourceVersion, the canonical form, the log entry and the watchers' wake-up.
    @discardableResult
    func commit(_ type: WatchEventType, value: JSON, store: ResourceStore, definition: ResourceDefinition, previous: StoredObject?) -> StoredObject {
        revision += 1
        var value = value
        value["metadata"]?["resourceVersion"] = .string(String(revision))
        value = ObjectRules.canonical(value, definition: definition)
        let namespace = value["metadata"]?["namespace"]?.stringValue
        let name = value["metadata"]?["name"]?.stringValue ?? ""
        let object = StoredObject(
            value: value, key: StoredObject.key(namespace: namespace, name: name), namespace: namespace, name: name,
            uid: value["metadata"]?["uid"]?.stringValue ?? "", resourceVersion: revision)
        switch type {
        case .added, .modified:
            store.objects[object.key] = object
            store.insertKey(object.key)
        case .deleted:
            store.objects[object.key] = nil
            store.removeKey(object.key)
        }
        store.log.append(LogEntry(type: type, revision: revision, object: object, previous: previous))
        if options.recordHistory {
            history.append(KubeTestServer.HistoryEntry(storage: store.storage, type: type.rawValue, uid: object.uid, resourceVersion: revision,
                                                       namespace: object.namespace, name: object.name))
        }
        trimWatchCache(store)
        for session in store.watchers.values { session.pump() }
        return object
    }

    func trimWatchCache(_ store: ResourceStore) {
        let capacity = options.watchCacheCapacity
        guard store.log.count > capacity + capacity / 4 else { return }
        let excess = store.log.count - capacity
        let cutoff = store.log.entry(at: store.log.firstSequence + excess - 1).revision
        store.log.trim(through: cutoff, keepFrom: store.oldestWatchCursor)
    }

    func update(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard let name = target.name else {
            return .status(405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource", details: .object([]))
        }
        switch parseBody(request, definition: definition) {
        case .failure(let response): return response
        case .success(let value):
            if let bodyName = value["metadata"]?["name"]?.stringValue, bodyName != name {
                return .status(400, reason: "BadRequest", message: "the name of the object (\(bodyName)) does not match the name on the URL (\(name))")
            }
            let precondition = value["metadata"]?["resourceVersion"]?.stringValue
            return write(target, name: name, newValue: { _ in value }, precondition: precondition, request: request)
        }
    }

    func patch(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard let name = target.name else {
            return .status(405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource", details: .object([]))
        }
        let contentType = request.headers.first(name: "content-type") ?? ""
        guard contentType.hasPrefix("application/merge-patch+json") || contentType.hasPrefix("application/strategic-merge-patch+json") else {
            return .status(415, reason: "UnsupportedMediaType", message: "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json")
        }
        switch parseBody(request, definition: definition) {
        case .failure(let response): return response
        case .success(let patch):
            let precondition = patch["metadata"]?["resourceVersion"]?.stringValue
            return write(target, name: name, newValue: { $0.merging(patch: patch) }, precondition: precondition, request: request)
        }
    }

    private func write(_ target: ResourceTarget, name: String, newValue: (JSON) -> JSON, precondition: String?, request: APIRequest) -> APIResponse {
        let definition = target.definition
        let store = store(for: definition)
        let key = StoredObject.key(namespace: definition.namespaced ? target.namespace : nil, name: name)
        guard let current = store.objects[key] else { return notFound(definition, name: name) }
        if let precondition, !precondition.isEmpty, precondition != String(current.resourceVersion) {
            return .status(409, reason: "Conflict", message: "Operation cannot be fulfilled on \(definition.qualifiedResource) \(ObjectRules.quoted(name)): the object has been modified; please apply your changes to the latest version and try again",
                           details: ObjectRules.details(name: name, definition: definition))
        }
        var value = newValue(current.value)
        let causes = ObjectRules.validate(value, definition: definition)
        if !causes.isEmpty { return invalid(definition, name: name, causes: causes) }
        // Identity and server-owned fields stay as stored.
        let old = current.value
        var metadata = value["metadata"] ?? .object([])
        for field in ["name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"] {
            metadata[field] = old["metadata"]?[field]
        }
        metadata["managedFields"] = old["metadata"]?["managedFields"]
        value["metadata"] = metadata
        value["apiVersion"] = old["apiVersion"]
        value["kind"] = old["kind"]
        let subresource = target.subresource
        if definition.hasStatus {
            if subresource == "status" {
                var kept = old
                kept["status"] = value["status"]
                value = kept
            } else {
                value["status"] = old["status"]
            }
        }
        if Self.sameIgnoringVersion(value, old) {
            return APIResponse(code: 200, body: render(current, as: definition) + [0x0A])
        }
        if definition.tracksGeneration, subresource == nil, Self.specChanged(old, value) {
            value["metadata"]?["generation"] = .int((old["metadata"]?["generation"]?.int64Value ?? 0) + 1)
        }
        let manager = manager(of: request)
        let fields = ObjectRules.fieldsV1(of: value, subresource: subresource)
        var entries = (old["metadata"]?["managedFields"]?.arrayValue ?? []).filter {
            !($0["manager"]?.stringValue == manager && $0["subresource"]?.stringValue == subresource)
        }
        entries.append(ObjectRules.managedFieldsEntry(manager: manager, apiVersion: definition.apiVersion,
                                                      time: ObjectRules.timestamp(now), fields: fields, subresource: subresource))
        value["metadata"]?["managedFields"] = .array(entries.sorted {
            ($0["manager"]?.stringValue ?? "") < ($1["manager"]?.stringValue ?? "")
        })
        let object = commit(.modified, value: value, store: store, definition: definition, previous: current)
        if definition.resource == "customresourcedefinitions" { rebuildServed() }
        return APIResponse(code: 200, body: render(object, as: definition) + [0x0A])
    }

    static func sameIgnoringVersion(_ a: JSON, _ b: JSON) -> Bool {
        var a = a
        var b = b
        a["metadata"]?["resourceVersion"] = nil
        b["metadata"]?["resourceVersion"] = nil
        a["metadata"]?["managedFields"] = nil
        b["metadata"]?["managedFields"] = nil
        return a.sortedKeys() == b.sortedKeys()
    }

    static func specChanged(_ old: JSON, _ new: JSON) -> Bool {
        var a = old
        var b = new
        for key in ["metadata", "status"] {
            a[key] = nil
            b[key] = nil
        }
        return a.sortedKeys() != b.sortedKeys()
    }

    func delete(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard let name = target.name else { return deleteCollection(target, query: [:]) }
        let store = store(for: definition)
        let key = StoredObject.key(namespace: definition.namespaced ? target.namespace : nil, name: name)
        guard let current = store.objects[key] else { return notFound(definition, name: name) }
        if !request.body.isEmpty, let options = try? JSON(parsing: request.body), let preconditions = options["preconditions"] {
            if let uid = preconditions["uid"]?.stringValue, uid != current.uid {
                return .status(409, reason: "Conflict", message: "Operation cannot be fulfilled on \(definition.qualifiedResource) \(ObjectRules.quoted(name)): Precondition failed: UID in precondition: \(uid), UID in object meta: \(current.uid)",
                               details: ObjectRules.details(name: name, definition: definition))
            }
            if let rv = preconditions["resourceVersion"]?.stringValue, rv != String(current.resourceVersion) {
                return .status(409, reason: "Conflict", message: "Operation cannot be fulfilled on \(definition.qualifiedResource) \(ObjectRules.quoted(name)): Precondition failed: ResourceVersion in precondition: \(rv), ResourceVersion in object meta: \(current.resourceVersion)",
                               details: ObjectRules.details(name: name, definition: definition))
            }
        }
        if definition.resource == "customresourcedefinitions" {
            return deleteCRD(current, store: store, definition: definition)
        }
        commit(.deleted, value: current.value, store: store, definition: definition, previous: current)
        return .json(200, ObjectRules.status(code: 200, reason: nil, message: nil,
                                             details: ObjectRules.details(name: name, definition: definition, uid: current.uid)))
    }

    func deleteCollection(_ target: ResourceTarget, query: [String: String]) -> APIResponse {
        let definition = target.definition
        let store = store(for: definition)
        let selector = try? query["labelSelector"].map(LabelSelector.init(parsing:))
        let prefix = target.namespace.map { "/\($0)/" }
        for key in store.sortedKeys where prefix == nil || key.hasPrefix(prefix!) {
            guard let object = store.objects[key] else { continue }
            if let selector = selector ?? nil, !selector.matches(object.labels) { continue }
            commit(.deleted, value: object.value, store: store, definition: definition, previous: object)
        }
        return .json(200, ObjectRules.status(code: 200, reason: nil, message: nil, details: nil))
    }

    // MARK: CustomResourceDefinitions

    private var crdDefinition: ResourceDefinition {
        BuiltinCatalog.groups.first { $0.name == "apiextensions.k8s.io" }!.resources[0]
    }

    func prepareNewCRD(_ crd: JSON) -> JSON {
        var crd = crd
        if var spec = crd["spec"] {
            if spec["conversion"] == nil { spec["conversion"] = .object([("strategy", .string("None"))]) }
            crd["spec"] = spec
        }
        let storageVersion = crd["spec"]?["versions"]?.arrayValue?.first { $0["storage"] == .bool(true) }?["name"] ?? .string("v1")
        crd["status"] = .object([
            ("conditions", .null),
            ("acceptedNames", .object([("plural", .string("")), ("kind", .string(""))])),
            ("storedVersions", .array([storageVersion])),
        ])
        return crd
    }

    func scheduleEstablish(name: String) {
        loop.assumeIsolated().scheduleTask(in: options.crdEstablishDelay) { [self] in
            let store = store(for: crdDefinition)
            guard let current = store.objects["/\(name)"] else { return }
            var value = current.value
            let time = ObjectRules.timestamp(now)
            let names = value["spec"]?["names"] ?? .object([])
            value["status"] = .object([
                ("conditions", .array([
                    .object([("type", .string("NamesAccepted")), ("status", .string("True")), ("lastTransitionTime", .string(time)),
                             ("reason", .string("NoConflicts")), ("message", .string("no conflicts found"))]),
                    .object([("type", .string("Established")), ("status", .string("True")), ("lastTransitionTime", .string(time)),
                             ("reason", .string("InitialNamesAccepted")), ("message", .string("the initial names have been accepted"))]),
                ])),
                ("acceptedNames", names),
                ("storedVersions", value["status"]?["storedVersions"] ?? .array([])),
            ])
            var fields = value["metadata"]?["managedFields"]?.arrayValue ?? []
            let statusFields: JSON = .object([("f:status", .object([
                ("f:acceptedNames", .object(((names.objectMembers ?? []).map { ("f:\($0.0)", JSON.object([])) }).sorted { $0.0 < $1.0 })),
                ("f:conditions", .object([
                    ("k:{\"type\":\"Established\"}", Self.conditionFields),
                    ("k:{\"type\":\"NamesAccepted\"}", Self.conditionFields),
                ])),
            ]))])
            fields.insert(ObjectRules.managedFieldsEntry(manager: "kube-apiserver", apiVersion: "apiextensions.k8s.io/v1", time: time,
                                                         fields: statusFields, subresource: "status"), at: 0)
            value["metadata"]?["managedFields"] = .array(fields)
            commit(.modified, value: value, store: store, definition: crdDefinition, previous: current)
            if let stale = stores[Self.storageOfCRD(value)], stale.isRemoved { stores[stale.storage] = nil }
            rebuildServed()
        }
    }

    static let conditionFields: JSON = .object([
        (".", .object([])), ("f:lastTransitionTime", .object([])), ("f:message", .object([])), ("f:reason", .object([])),
        ("f:status", .object([])), ("f:type", .object([])),
    ])

    static func storageOfCRD(_ crd: JSON) -> String {
        let plural = crd["spec"]?["names"]?["plural"]?.stringValue ?? ""
        let group = crd["spec"]?["group"]?.stringValue ?? ""
        return "\(plural).\(group)"
    }

    func deleteCRD(_ current: StoredObject, store: ResourceStore, definition: ResourceDefinition) -> APIResponse {
        var value = current.value
        let time = ObjectRules.timestamp(now)
        value["metadata"]?["deletionTimestamp"] = .string(time)
        value["metadata"]?["finalizers"] = .array([.string("customresourcecleanup.apiextensions.k8s.io")])
        var conditions = value["status"]?["conditions"]?.arrayValue ?? []
        conditions.append(.object([
            ("type", .string("Terminating")), ("status", .string("True")), ("lastTransitionTime", .string(time)),
            ("reason", .string("InstanceDeletionPending")),
            ("message", .string("CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon")),
        ]))
        value["status"]?["conditions"] = .array(conditions)
        let terminating = commit(.modified, value: value, store: store, definition: definition, previous: current)
        let storageKey = Self.storageOfCRD(value)
        let crName = current.name
        loop.assumeIsolated().scheduleTask(in: options.crdCleanupDelay) { [self] in
            if let crStore = stores[storageKey] {
                let crDefinition = Self.definitions(ofCRD: terminating.value).first
                for key in crStore.sortedKeys {
                    guard let object = crStore.objects[key], let crDefinition else { continue }
                    commit(.deleted, value: object.value, store: crStore, definition: crDefinition, previous: object)
                }
                crStore.isRemoved = true
                self.loop.assumeIsolated().scheduleTask(in: options.crdWatchCloseDelay) {
                    for session in crStore.watchers.values { session.finish() }
                }
            }
            if let latest = store.objects["/\(crName)"] {
                var final = latest.value
                final["metadata"]?["finalizers"] = nil
                commit(.deleted, value: final, store: store, definition: definition, previous: latest)
            }
            rebuildServed()
        }
        return APIResponse(code: 200, body: terminating.bytes + [0x0A])
    }

    // MARK: Discovery

    enum DiscoveryFormat {
        case legacy
        case aggregated(String)
    }

    /// Content negotiation as kube-apiserver does it: the first acceptable media type in the client's order.
    func negotiate(_ accept: String?) -> DiscoveryFormat? {
        guard let accept, !accept.isEmpty else { return .legacy }
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { $0.trimmingSpaces() }
            guard let type = parts.first else { continue }
            var params: [String: String] = [:]
            for p in parts.dropFirst() {
                let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
                if kv.count == 2 { params[kv[0]] = kv[1] }
            }
            if type == "application/json", params["g"] == "apidiscovery.k8s.io", params["as"] == "APIGroupDiscoveryList" {
                if let v = params["v"], options.aggregatedDiscoveryVersions.contains(v) { return .aggregated(v) }
                continue
            }
            if type == "application/json" || type == "*/*" || type == "application/*" {
                if params["as"] == nil { return .legacy }
            }
        }
        return nil
    }

    func discoveryRoot(core: Bool, accept: String?, ifNoneMatch: String?) -> APIResponse {
        guard let format = negotiate(accept) else {
            let status = ObjectRules.status(code: 406, reason: "NotAcceptable",
                                            message: "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf")
            return APIResponse(code: 406, body: Array(status.prettyPrinted().utf8))
        }
        switch format {
        case .legacy:
            if core {
                return .json(200, .object([
                    ("kind", .string("APIVersions")), ("versions", .array([.string("v1")])),
                    ("serverAddressByClientCIDRs", .array([.object([("clientCIDR", .string("0.0.0.0/0")), ("serverAddress", .string("127.0.0.1:\(port)"))])])),
                ]))
            }
            let groupsJSON: [JSON] = groups.filter { !$0.name.isEmpty }.map(groupJSON)
            return .json(200, .object([("kind", .string("APIGroupList")), ("apiVersion", .string("v1")), ("groups", .array(groupsJSON))]))
        case .aggregated(let version):
            let cacheKey = "\(core)/\(version)"
            let cached: (body: [UInt8], etag: String)
            if let hit = discoveryCache[cacheKey] {
                cached = hit
            } else {
                let body = aggregatedDocument(core: core, version: version).serialized() + [0x0A]
                let etag = "\"" + SHA512.hash(data: body).map { String(format: "%02X", $0) }.joined() + "\""
                cached = (body, etag)
                discoveryCache[cacheKey] = cached
            }
            let contentType = "application/json;g=apidiscovery.k8s.io;v=\(version);as=APIGroupDiscoveryList"
            if let ifNoneMatch, ifNoneMatch == cached.etag {
                return APIResponse(code: 304, contentType: contentType, cacheControl: "public",
                                   extraHeaders: [("Etag", cached.etag), ("Vary", "Accept")], body: [])
            }
            return APIResponse(code: 200, contentType: contentType, cacheControl: "public",
                               extraHeaders: [("Etag", cached.etag), ("Vary", "Accept")], body: cached.body)
        }
    }

    func groupJSON(_ group: GroupDefinition) -> JSON {
        let versions: [JSON] = group.versions.map {
            .object([("groupVersion", .string("\(group.name)/\($0)")), ("version", .string($0))])
        }
        return .object([("name", .string(group.name)), ("versions", .array(versions)), ("preferredVersion", versions[0])])
    }

    func groupDocument(_ name: String) -> APIResponse {
        guard let group = groups.first(where: { $0.name == name && !name.isEmpty }) else { return .plainNotFound }
        var document = groupJSON(group)
        document = .object([("kind", .string("APIGroup")), ("apiVersion", .string("v1"))] + (document.objectMembers ?? []))
        return .json(200, document)
    }

    func resourceList(group: String, version: String) -> APIResponse {
        let definitions = groups.first { $0.name == group }?.resources.filter { $0.version == version } ?? []
        var entries: [(String, JSON)] = []
        for d in definitions {
            var entry: [(String, JSON)] = [("name", .string(d.resource)), ("singularName", .string(d.singular)),
                                           ("namespaced", .bool(d.namespaced)), ("kind", .string(d.kind)),
                                           ("verbs", .array(d.verbs.map { .string($0) }))]
            if !d.shortNames.isEmpty { entry.append(("shortNames", .array(d.shortNames.map { .string($0) }))) }
            if !d.categories.isEmpty { entry.append(("categories", .array(d.categories.map { .string($0) }))) }
            entry.append(("storageVersionHash", .string(d.storageVersionHash)))
            entries.append((d.resource, .object(entry)))
            for sub in d.subresources {
                var subEntry: [(String, JSON)] = [("name", .string("\(d.resource)/\(sub.name)")), ("singularName", .string("")),
                                                  ("namespaced", .bool(d.namespaced))]
                if let g = sub.group, let v = sub.version, !(d.isCustom && g == d.group) {
                    subEntry += [("group", .string(g)), ("version", .string(v))]
                }
                subEntry += [("kind", .string(sub.kind)), ("verbs", .array(sub.verbs.map { .string($0) }))]
                entries.append(("\(d.resource)/\(sub.name)", .object(subEntry)))
            }
        }
        entries.sort { $0.0 < $1.0 }
        var document: [(String, JSON)] = [("kind", .string("APIResourceList"))]
        if !group.isEmpty { document.append(("apiVersion", .string("v1"))) }
        document.append(("groupVersion", .string(group.isEmpty ? version : "\(group)/\(version)")))
        document.append(("resources", .array(entries.map(\.1))))
        return .json(200, .object(document))
    }

    func aggregatedDocument(core: Bool, version: String) -> JSON {
        let selected = groups.filter { core ? $0.name.isEmpty : !$0.name.isEmpty }
        let items: [JSON] = selected.map { group in
            let versions: [JSON] = group.versions.map { v in
                let resources: [JSON] = group.resources.filter { $0.version == v }.sorted { $0.resource < $1.resource }.map { d in
                    let responseKind: JSON = .object([
                        ("group", .string(d.isCustom ? d.group : "")), ("version", .string(d.isCustom ? d.version : "")),
                        ("kind", .string(d.kind)),
                    ])
                    var entry: [(String, JSON)] = [
                        ("resource", .string(d.resource)), ("responseKind", responseKind),
                        ("scope", .string(d.namespaced ? "Namespaced" : "Cluster")), ("singularResource", .string(d.singular)),
                        ("verbs", .array(d.verbs.map { .string($0) })),
                    ]
                    if !d.shortNames.isEmpty { entry.append(("shortNames", .array(d.shortNames.map { .string($0) }))) }
                    if !d.categories.isEmpty { entry.append(("categories", .array(d.categories.map { .string($0) }))) }
                    if !d.subresources.isEmpty {
                        entry.append(("subresources", .array(d.subresources.map { sub in
                            .object([
                                ("subresource", .string(sub.name)),
                                ("responseKind", .object([("group", .string(sub.group ?? "")), ("version", .string(sub.version ?? "")),
                                                          ("kind", .string(sub.kind))])),
                                ("verbs", .array(sub.verbs.map { .string($0) })),
                            ])
                        })))
                    }
                    return .object(entry)
                }
                return .object([("version", .string(v)), ("resources", .array(resources)), ("freshness", .string("Current"))])
            }
            let metadata: JSON = group.name.isEmpty ? .object([]) : .object([("name", .string(group.name))])
            return .object([("metadata", metadata), ("versions", .array(versions))])
        }
        return .object([
            ("kind", .string("APIGroupDiscoveryList")), ("apiVersion", .string("apidiscovery.k8s.io/\(version)")),
            ("metadata", .object([])), ("items", .array(items)),
        ])
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

/// A request path resolved against what the server serves.
struct ResourceTarget {
    var definition: ResourceDefinition
    var namespace: String?
    var name: String?
    var subresource: String?
}

struct Route {
    enum Kind {
        case root, health, version, apiRoot, apisRoot
        case group(String)
        case groupVersion(String, String)
        case resource(ResourceTarget)
        case notFoundJSON, notFoundPlain
    }

    var kind: Kind

    var target: ResourceTarget? {
        if case .resource(let t) = kind { return t }
        return nil
    }

    var definition: ResourceDefinition? { target?.definition }
    var namespace: String? { target?.namespace }

    /// The group a discovery request is about.
    var group: String? {
        switch kind {
        case .group(let group), .groupVersion(let group, _): group
        default: nil
        }
    }

    func verb(method: HTTPMethod, query: [String: String]) -> RequestVerb {
        guard let target else { return .discovery }
        switch method {
        case .GET:
            if target.name == nil {
                let watch = query["watch"]
                return watch == "true" || watch == "1" ? .watch : .list
            }
            return .get
        case .POST: return .create
        case .PUT: return .update
        case .PATCH: return .patch
        case .DELETE: return target.name == nil ? .deletecollection : .delete
        default: return .get
        }
    }

    init(path: String, state: APIServerState) {
        let segments = path.split(separator: "/").map(String.init)
        guard let first = segments.first else { kind = .root; return }
        switch first {
        case "version" where segments.count == 1: kind = .version; return
        case "healthz", "livez", "readyz": kind = .health; return
        case "api":
            if segments.count == 1 { kind = .apiRoot; return }
            guard segments[1] == "v1" else { kind = .notFoundPlain; return }
            if segments.count == 2 { kind = .groupVersion("", "v1"); return }
            kind = Route.resolve(group: "", version: "v1", rest: Array(segments[2...]), state: state, jsonNotFound: true)
        case "apis":
            if segments.count == 1 { kind = .apisRoot; return }
            let group = segments[1]
            guard let served = state.groups.first(where: { $0.name == group && !group.isEmpty }) else { kind = .notFoundPlain; return }
            if segments.count == 2 { kind = .group(group); return }
            let version = segments[2]
            guard served.versions.contains(version) else { kind = .notFoundPlain; return }
            if segments.count == 3 { kind = .groupVersion(group, version); return }
            let builtin = BuiltinCatalog.groups.contains { $0.name == group }
            kind = Route.resolve(group: group, version: version, rest: Array(segments[3...]), state: state, jsonNotFound: builtin)
        default:
            kind = .notFoundPlain
        }
    }

    static func resolve(group: String, version: String, rest: [String], state: APIServerState, jsonNotFound: Bool) -> Kind {
        var parts = rest
        var namespace: String?
        if parts[0] == "namespaces", parts.count > 2, !["status", "finalize"].contains(parts[2]) {
            namespace = parts[1]
            parts = Array(parts[2...])
        }
        guard parts.count <= 3, let definition = state.definition(group: group, version: version, resource: parts[0]) else {
            return jsonNotFound ? .notFoundJSON : .notFoundPlain
        }
        if definition.namespaced == false, namespace != nil { return jsonNotFound ? .notFoundJSON : .notFoundPlain }
        let name = parts.count > 1 ? parts[1] : nil
        let subresource = parts.count > 2 ? parts[2] : nil
        if definition.namespaced, namespace == nil, name != nil { return jsonNotFound ? .notFoundJSON : .notFoundPlain }
        return .resource(ResourceTarget(definition: definition, namespace: namespace, name: name, subresource: subresource))
    }
}
extension APIResponse: Error {}

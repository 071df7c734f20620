import NIOCore
import NIOHTTP1

/// Controls of the test server over HTTP, for the benchmarks and chaos runs that drive a server in
/// another process. Not part of the Kubernetes API: paths under `/kubebridge-test/`, admin only.
///
/// - `GET  /kubebridge-test/status`: `{"resourceVersion":N,"generating":B,"openWatches":W}`
/// - `POST /kubebridge-test/compact?rollWatchCache=true`
/// - `POST /kubebridge-test/generate?namespace=NS&count=N&bytes=B&prefix=P&rate=R&resource=G/V/R`: N
///   objects of about B bytes each (ConfigMaps unless `resource` names another served namespaced
///   resource, `core/v1/configmaps` style), created on the server's loop in batches (so watches keep
///   flowing), at R per second when R is given; answered at once. With `update=M`, N merge patches
///   of the existing objects P-0 to P-(M-1) in turn instead.
/// - `POST /kubebridge-test/end-watches`
extension APIServerState {
    static let controlPrefix = "/kubebridge-test/"

    func control(_ request: APIRequest, user: TestUser) -> APIResponse {
        guard user.name == "admin" else {
            return .status(403, reason: "Forbidden", message: "the test server's controls are for the admin user")
        }
        let action = String(request.path.dropFirst(Self.controlPrefix.count))
        switch (request.method, action) {
        case (.GET, "status"):
            return .json(200, .object([
                ("resourceVersion", .int(revision)), ("generating", .bool(generating > 0)), ("openWatches", .int(allSessions.count)),
            ]))
        case (.POST, "compact"):
            compact(rollWatchCache: request.query["rollWatchCache"] != "false")
            return .json(200, .object([("resourceVersion", .int(revision))]))
        case (.POST, "end-watches"):
            for session in allSessions.values { session.finish() }
            return .json(200, .object([]))
        case (.POST, "generate"):
            let namespace = request.query["namespace"] ?? "default"
            let count = Int(request.query["count"] ?? "") ?? 0
            let bytes = Int(request.query["bytes"] ?? "") ?? 256
            let prefix = request.query["prefix"] ?? "generated"
            let rate = Int(request.query["rate"] ?? "")
            let path = (request.query["resource"] ?? "core/v1/configmaps").split(separator: "/").map(String.init)
            guard path.count == 3, let definition = definition(group: path[0] == "core" ? "" : path[0], version: path[1], resource: path[2]),
                  definition.namespaced
            else {
                return .status(400, reason: "BadRequest", message: "resource must name a served namespaced resource as group/version/resource")
            }
            if !namespaceExists(namespace) { seedNamespace(namespace) }
            generating += 1
            let plan = Generation(definition: definition, namespace: namespace, prefix: prefix, count: count, bytes: bytes, rate: rate,
                                  updating: Int(request.query["update"] ?? "").map { max(1, $0) }, started: .now())
            generate(plan, from: 0)
            return .json(202, .object([("accepted", .int(count))]))
        default:
            return .status(404, reason: "NotFound", message: "unknown control \(request.method.rawValue) \(request.path)")
        }
    }

    struct Generation {
        var definition: ResourceDefinition
        var namespace: String
        var prefix: String
        var count: Int
        var bytes: Int
        var rate: Int?
        /// How many existing objects to patch in turn; nil to create.
        var updating: Int?
        var started: NIODeadline
    }

    private func generate(_ plan: Generation, from start: Int) {
        let definition = plan.definition
        let filler = String(repeating: "x", count: max(0, plan.bytes - 200))
        let apiVersion = definition.group.isEmpty ? definition.version : "\(definition.group)/\(definition.version)"
        let field = definition.resource == "configmaps" ? "data" : "spec"
        // Paced: a tenth of the rate per 100 ms, each batch due at its own time from the start, so
        // that the time a batch takes does not slow the rate down.
        let batch = plan.rate.map { max(1, $0 / 10) } ?? 500
        let batchEnd = min(plan.count, start + batch)
        for index in start..<batchEnd {
            if let updating = plan.updating {
                let name = "\(plan.prefix)-\(index % updating)"
                _ = patch(ResourceTarget(definition: definition, namespace: plan.namespace, name: name), request: APIRequest(
                    method: .PATCH, path: "", query: [:],
                    headers: HTTPHeaders([("User-Agent", "kubebridge-test-generator/1"), ("Content-Type", "application/merge-patch+json")]),
                    body: Array(#"{"\#(field)":{"revision":"\#(index)"}}"#.utf8), tlsUser: nil))
            } else {
                let body = #"{"apiVersion":"\#(apiVersion)","kind":"\#(definition.kind)","metadata":{"name":"\#(plan.prefix)-\#(index)","labels":{"generated":"true"}},"\#(field)":{"filler":"\#(filler)"}}"#
                _ = create(ResourceTarget(definition: definition, namespace: plan.namespace), request: APIRequest(
                    method: .POST, path: "", query: [:], headers: HTTPHeaders([("User-Agent", "kubebridge-test-generator/1")]),
                    body: Array(body.utf8), tlsUser: nil))
            }
        }
        if batchEnd < plan.count {
            // Never sooner than a moment from now: NIO runs every task that is due before it looks
            // at sockets again, so a batch due at once would hold every request and watch back
            // until the last batch is made.
            let soonest = NIODeadline.now() + .milliseconds(1)
            let due = plan.rate == nil ? soonest : max(soonest, plan.started + .milliseconds(Int64(100 * (batchEnd / batch))))
            loop.assumeIsolated().scheduleTask(deadline: due) { self.generate(plan, from: batchEnd) }
        } else {
            generating -= 1
        }
    }
}

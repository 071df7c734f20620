import NIOCore
import NIOHTTP1

/// Controls of the test server over HTTP, for the benchmarks and chaos runs that drive a server in
/// another process. Not part of the Kubernetes API: paths under `/kubebridge-test/`, admin only.
///
/// - `GET  /kubebridge-test/status`: `{"resourceVersion":N,"generating":B,"openWatches":W}`
/// - `POST /kubebridge-test/compact?rollWatchCache=true`
/// - `POST /kubebridge-test/generate?namespace=NS&count=N&bytes=B&prefix=P&rate=R`: N ConfigMaps of
///   about B bytes each, created on the server's loop in batches (so watches keep flowing), at R per
///   second when R is given; answered at once.
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
            if !namespaceExists(namespace) { seedNamespace(namespace) }
            generating += 1
            generate(namespace: namespace, prefix: prefix, from: 0, count: count, bytes: bytes, rate: rate)
            return .json(202, .object([("accepted", .int(count))]))
        default:
            return .status(404, reason: "NotFound", message: "unknown control \(request.method.rawValue) \(request.path)")
        }
    }

    private func generate(namespace: String, prefix: String, from start: Int, count: Int, bytes: Int, rate: Int?) {
        let configmaps = BuiltinCatalog.groups[0].resources.first { $0.resource == "configmaps" }!
        let filler = String(repeating: "x", count: max(0, bytes - 200))
        // Paced: a tenth of the rate every 100 ms.
        let batchEnd = min(count, start + (rate.map { max(1, $0 / 10) } ?? 500))
        for index in start..<batchEnd {
            let body = #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(prefix)-\#(index)","labels":{"generated":"true"}},"data":{"filler":"\#(filler)"}}"#
            _ = create(ResourceTarget(definition: configmaps, namespace: namespace), request: APIRequest(
                method: .POST, path: "", query: [:], headers: HTTPHeaders([("User-Agent", "kubebridge-test-generator/1")]),
                body: Array(body.utf8), tlsUser: nil))
        }
        if batchEnd < count {
            let next = { self.generate(namespace: namespace, prefix: prefix, from: batchEnd, count: count, bytes: bytes, rate: rate) }
            if rate != nil {
                loop.assumeIsolated().scheduleTask(in: .milliseconds(100), next)
            } else {
                loop.assumeIsolated().execute(next)
            }
        } else {
            generating -= 1
        }
    }
}

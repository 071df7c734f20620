import Foundation
import KubeAPI
import KubeModel
import KubeTestServer
import NIOCore
import Testing
import TestSupport

@Suite("KubeClient against the test API server, over real sockets")
struct KubeClientTests {
    // MARK: Discovery

    @Test("aggregated discovery: built-ins, preferred versions, no subresources")
    func aggregatedDiscovery() async throws {
        try await TestCluster.with { cluster in
            let result = try await cluster.client.discover()
            #expect(result.method == .aggregatedV2)
            #expect(result.failures.isEmpty)
            let preferred = result.preferred
            let configmaps = try #require(preferred.first { $0.gvr == TestCluster.configmaps })
            #expect(configmaps.kind == "ConfigMap")
            #expect(configmaps.namespaced)
            #expect(configmaps.isWatchable)
            #expect(preferred.contains { $0.gvr.description == "autoscaling/v2/horizontalpodautoscalers" })
            #expect(!preferred.contains { $0.gvr.description == "autoscaling/v1/horizontalpodautoscalers" })
            #expect(result.resources.contains { $0.gvr.description == "autoscaling/v1/horizontalpodautoscalers" })
            #expect(!result.resources.contains { $0.resource.contains("/") })
            let namespaces = try #require(preferred.first { $0.gvr == TestCluster.namespaces })
            #expect(!namespaces.namespaced)
            #expect(preferred.first { $0.resource == "tokenreviews" }?.isWatchable == false)
        }
    }

    @Test("servers without aggregated discovery get the same answer from legacy discovery",
          arguments: [Set<String>(), ["v2beta1"]])
    func legacyDiscovery(versions: Set<String>) async throws {
        let aggregated = try await TestCluster.with { try await $0.client.discover() }
        var options = KubeTestServer.Options()
        options.aggregatedDiscoveryVersions = versions
        let other = try await TestCluster.with(options) { try await $0.client.discover() }
        #expect(other.method == (versions.isEmpty ? .legacy : .aggregatedV2beta1))
        func keys(_ result: DiscoveryResult) -> [String] {
            result.resources.map { "\($0.gvr) \($0.kind) \($0.namespaced) \($0.verbs) \($0.isPreferredVersion)" }.sorted()
        }
        #expect(keys(aggregated) == keys(other))
    }

    @Test("a CRD appears in discovery once established and disappears when deleted")
    func crdLifecycle() async throws {
        try await TestCluster.with { cluster in
            #expect(try await !cluster.client.discover().resources.contains { $0.gvr == TestCluster.widgets })
            try await cluster.installWidgetCRD()
            let widgets = try #require(try await cluster.client.discover().preferred.first { $0.gvr == TestCluster.widgets })
            #expect(widgets.kind == "Widget")
            #expect(widgets.verbs.contains("watch"))
            try await cluster.client.delete(TestCluster.crds, namespace: nil, name: "widgets.example.com")
            try await waitUntil { try await !cluster.client.discover().resources.contains { $0.gvr == TestCluster.widgets } }
            let error = await #expect(throws: KubeAPIError.self) { try await cluster.client.list(TestCluster.widgets, namespace: "default") }
            #expect(error?.isNotFound == true)
            #expect(error?.code == .unexpectedResponse)
        }
    }

    // MARK: Lists

    @Test("pagination: every page at the first page's resourceVersion, every item once, kinds added")
    func pagination() async throws {
        try await TestCluster.with { cluster in
            for i in 0..<7 { _ = try await cluster.createConfigMap("cm-\(i)", labels: ["n": "\(i % 2)"]) }
            var token: String?
            var names: [String] = []
            var versions: Set<String> = []
            var pages = 0
            repeat {
                let page = try await cluster.client.list(TestCluster.configmaps, namespace: "default", options: ListOptions(limit: 3, continueToken: token))
                pages += 1
                versions.insert(page.resourceVersion)
                names += page.items.map(\.metadata.name)
                #expect(page.items.allSatisfy { $0.metadata.kind == "ConfigMap" && $0.text.hasPrefix(#"{"kind":"ConfigMap","apiVersion":"v1""#) })
                token = page.continueToken
                // A write between pages must not show up in a consistent list.
                if pages == 1 { _ = try await cluster.createConfigMap("cm-late") }
            } while token != nil
            #expect(pages == 3)
            #expect(versions.count == 1)
            #expect(names == (0..<7).map { "cm-\($0)" })
            let odd = try await cluster.client.list(TestCluster.configmaps, namespace: "default", options: ListOptions(labelSelector: "n=1"))
            #expect(odd.items.map(\.metadata.name) == ["cm-1", "cm-3", "cm-5"])
            let one = try await cluster.client.list(TestCluster.configmaps, options: ListOptions(fieldSelector: "metadata.name=cm-4"))
            #expect(one.items.map(\.metadata.namespace) == ["default"])
        }
    }

    @Test("an expired continue token and a compacted exact resourceVersion are 410: relist")
    func expiredList() async throws {
        try await TestCluster.with { cluster in
            for i in 0..<3 { _ = try await cluster.createConfigMap("cm-\(i)") }
            let first = try await cluster.client.list(TestCluster.configmaps, namespace: "default", options: ListOptions(limit: 1))
            _ = try await cluster.createConfigMap("cm-after")
            try await cluster.server.compact()
            let expired = await #expect(throws: KubeAPIError.self) {
                try await cluster.client.list(TestCluster.configmaps, namespace: "default", options: ListOptions(limit: 1, continueToken: first.continueToken))
            }
            #expect(expired?.isGone == true)
            #expect(expired?.recovery == .relist)
            #expect(expired?.status?.metadata?.continue != nil)
            let exact = await #expect(throws: KubeAPIError.self) {
                try await cluster.client.list(TestCluster.configmaps, options: ListOptions(resourceVersion: first.resourceVersion, resourceVersionMatch: "Exact"))
            }
            #expect(exact?.recovery == .relist)
        }
    }

    // MARK: Watches

    @Test("a watch delivers events in order with bookmarks, and ends at its timeout")
    func watchEvents() async throws {
        var options = KubeTestServer.Options()
        options.bookmarkBeforeTimeout = .milliseconds(500)
        try await TestCluster.with(options) { cluster in
            let start = try await cluster.client.list(TestCluster.configmaps, namespace: "default")
            // Made before the watch opens and replayed from the watch cache, so that a loaded
            // machine cannot let the bookmark before the timeout overtake them.
            let created = try await cluster.createConfigMap("w", data: ["v": "1"])
            _ = try await cluster.client.mergePatch(TestCluster.configmaps, namespace: "default", name: "w", json: #"{"data":{"v":"2"}}"#)
            try await cluster.client.delete(TestCluster.configmaps, namespace: "default", name: "w")
            let stream = try await cluster.client.watch(TestCluster.configmaps, namespace: "default",
                                                        options: WatchOptions(resourceVersion: start.resourceVersion, timeoutSeconds: 2))
            var seen: [String] = []
            var lastVersion = ""
            for try await frame in stream {
                switch frame {
                case .added(let object), .modified(let object), .deleted(let object):
                    #expect(object.metadata.uid == created.metadata.uid)
                    seen.append("\(frame.typeName) \(object.metadata.name)")
                    lastVersion = object.metadata.resourceVersion
                case .bookmark(let version, _):
                    seen.append("BOOKMARK")
                    #expect(version == lastVersion)
                case .error(let status):
                    Issue.record("unexpected error \(status)")
                }
            }
            #expect(seen == ["ADDED w", "MODIFIED w", "DELETED w", "BOOKMARK"])
        }
    }

    @Test("a streaming list sends the state, then the initial-events-end bookmark")
    func streamingList() async throws {
        try await TestCluster.with { cluster in
            for name in ["b", "a"] { _ = try await cluster.createConfigMap(name) }
            let stream = try await cluster.client.watch(TestCluster.configmaps, namespace: "default", options: WatchOptions(
                resourceVersionMatch: "NotOlderThan", timeoutSeconds: 1, sendInitialEvents: true))
            var seen: [String] = []
            for try await frame in stream {
                switch frame {
                case .added(let object): seen.append(object.metadata.name)
                case .bookmark(_, let end): seen.append(end ? "END" : "BOOKMARK")
                default: seen.append(frame.typeName)
                }
            }
            #expect(seen == ["a", "b", "END"])
        }
    }

    @Test("410 on a watch arrives as an ERROR frame with the Status")
    func watchGone() async throws {
        try await TestCluster.with { cluster in
            let list = try await cluster.client.list(TestCluster.configmaps)
            _ = try await cluster.createConfigMap("x")
            try await cluster.server.compact()
            let stream = try await cluster.client.watch(TestCluster.configmaps, options: WatchOptions(resourceVersion: list.resourceVersion))
            var frames: [WatchFrame] = []
            for try await frame in stream { frames.append(frame) }
            guard frames.count == 1, case .error(let status) = frames[0] else {
                Issue.record("expected one ERROR frame, got \(frames.map(\.typeName))")
                return
            }
            #expect(status.code == 410)
            #expect(status.reason == "Expired")
        }
    }

    @Test("a line over the limit is an error naming the resource")
    func oversizeLine() async throws {
        try await TestCluster.with(configure: { $0.maxWatchLineBytes = 4096 }) { cluster in
            let list = try await cluster.client.list(TestCluster.configmaps)
            let stream = try await cluster.client.watch(TestCluster.configmaps, options: WatchOptions(resourceVersion: list.resourceVersion))
            _ = try await cluster.createConfigMap("small")
            _ = try await cluster.createConfigMap("big", data: ["blob": String(repeating: "x", count: 20_000)])
            var names: [String] = []
            let error = await #expect(throws: KubeAPIError.self) {
                for try await frame in stream {
                    if case .added(let object) = frame { names.append(object.metadata.name) }
                }
            }
            #expect(names == ["small"])
            #expect(error?.code == .lineTooLong)
            #expect(error?.description.contains("core/v1/configmaps") == true)
            #expect(error?.description.contains("4096") == true)
        }
    }

    @Test("a stream cut mid-line is an error after the complete events, never a skipped event",
          arguments: [true, false])
    func cutMidLine(cleanEnd: Bool) async throws {
        try await TestCluster.with { cluster in
            let list = try await cluster.client.list(TestCluster.configmaps)
            try await cluster.server.inject(FaultRule(verbs: [.watch], resource: "configmaps",
                                                      action: .cutWatchMidLine(afterEvents: 2, cleanEnd: cleanEnd), count: 1))
            let stream = try await cluster.client.watch(TestCluster.configmaps, options: WatchOptions(resourceVersion: list.resourceVersion))
            for name in ["a", "b", "c"] { _ = try await cluster.createConfigMap(name) }
            var names: [String] = []
            let error = await #expect(throws: KubeAPIError.self) {
                for try await frame in stream {
                    if case .added(let object) = frame { names.append(object.metadata.name) }
                }
            }
            #expect(names == ["a", "b"])
            #expect(error?.code == (cleanEnd ? .truncatedStream : .transport))
            #expect(error?.isRetriable == true)
        }
    }

    @Test("a stalled watch times out on the idle read timeout")
    func stalledWatch() async throws {
        // Long enough for a new TLS connection and the watch's headers on a starved machine.
        try await TestCluster.with(configure: { $0.idleReadTimeout = .seconds(3) }) { cluster in
            try await cluster.server.inject(FaultRule(verbs: [.watch], action: .stallWatch, count: 1))
            let stream = try await cluster.client.watch(TestCluster.configmaps, options: WatchOptions(resourceVersion: "1"))
            // Made on the server directly: through this client, a slow answer would meet the same short timeout.
            let (created, _) = try await cluster.server.perform("POST", "/api/v1/namespaces/default/configmaps",
                                                                body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"never-seen"}}"#)
            #expect(created == 201)
            let error = await #expect(throws: KubeAPIError.self) {
                for try await _ in stream {}
            }
            #expect(error?.code == .timeout)
            #expect(error?.isRetriable == true)
        }
    }

    @Test("a consumer that does not read holds the server back: nothing piles up in between")
    func backpressure() async throws {
        try await TestCluster.with { cluster in
            let list = try await cluster.client.list(TestCluster.configmaps)
            let stream = try await cluster.client.watch(TestCluster.configmaps, options: WatchOptions(resourceVersion: list.resourceVersion))
            let count = 3000
            let blob = String(repeating: "x", count: 4096)
            for i in 0..<count {
                _ = try await cluster.server.perform("POST", "/api/v1/namespaces/default/configmaps",
                                                     body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-\#(i)"},"data":{"b":"\#(blob)"}}"#)
            }
            try await Task.sleep(for: .milliseconds(500))
            let sentWhileIdle = try await cluster.server.openWatches().first?.eventsSent ?? -1
            // About 12 MiB of events: the socket buffers and the client's small window hold a fraction.
            #expect(sentWhileIdle >= 0 && sentWhileIdle < count / 2, "the server wrote \(sentWhileIdle) of \(count) events to a reader that read nothing")
            var received = 0
            for try await frame in stream {
                guard case .added(let object) = frame else { continue }
                #expect(object.metadata.name == "cm-\(received)")
                received += 1
                if received == count { break }
            }
            #expect(received == count)
        }
    }

    // MARK: Errors

    @Test("API errors are typed: forbidden, throttled with Retry-After, server errors, not found")
    func typedErrors() async throws {
        try await TestCluster.with(user: .viewer) { cluster in
            let forbidden = await #expect(throws: KubeAPIError.self) { try await cluster.client.list(TestCluster.configmaps, namespace: "default") }
            #expect(forbidden?.isForbidden == true)
            #expect(forbidden?.recovery == .giveUp)
            #expect(forbidden?.message.contains("User \"viewer\" cannot list resource \"configmaps\"") == true)
        }
        try await TestCluster.with { cluster in
            try await cluster.server.inject(FaultRule(verbs: [.list], action: .tooManyRequests(retryAfterSeconds: 3), count: 1))
            let throttled = await #expect(throws: KubeAPIError.self) { try await cluster.client.list(TestCluster.configmaps) }
            #expect(throttled?.recovery == .retry(after: .seconds(3)))
            try await cluster.server.inject(FaultRule(verbs: [.list], action: .nonJSONError(code: 502, body: "<html>bad gateway</html>"), count: 1))
            let proxy = await #expect(throws: KubeAPIError.self) { try await cluster.client.list(TestCluster.configmaps) }
            #expect(proxy?.code == .unexpectedResponse)
            #expect(proxy?.httpStatus == 502)
            #expect(proxy?.isRetriable == true)
            #expect(proxy?.message.contains("bad gateway") == true)
            // A GET lost with its connection goes out again at once (twice at most), then fails.
            try await cluster.server.inject(FaultRule(verbs: [.list], action: .dropConnection, count: 1))
            #expect(try await cluster.client.list(TestCluster.configmaps).items.isEmpty)
            try await cluster.server.inject(FaultRule(verbs: [.list], action: .dropConnection, count: 3))
            let dropped = await #expect(throws: KubeAPIError.self) { try await cluster.client.list(TestCluster.configmaps) }
            #expect(dropped?.code == .transport)
            let missing = await #expect(throws: KubeAPIError.self) {
                try await cluster.client.get(TestCluster.configmaps, namespace: "default", name: "nope")
            }
            #expect(missing?.isNotFound == true)
            #expect(missing?.status?.reason == "NotFound")
            // After the faults, the same client works.
            #expect(try await cluster.client.list(TestCluster.configmaps).items.isEmpty)
        }
    }

    // MARK: TLS and credentials

    @Test("a server certificate that does not verify is refused, with the CA hint")
    func wrongCA() async throws {
        let other = try TestPKI()
        try await TestCluster.with(configure: { $0.certificateAuthorityPEM = Array(other.caCertificatePEM.utf8) }) { cluster in
            let error = await #expect(throws: KubeAPIError.self) { try await cluster.client.discover() }
            #expect(error?.code == .tlsVerification)
            #expect(error?.message.contains("certificate-authority") == true)
        }
        try await TestCluster.with(configure: {
            $0.certificateAuthorityPEM = nil
            $0.insecureSkipTLSVerify = true
        }) { cluster in
            let resources = try await cluster.client.discover().resources
            #expect(!resources.isEmpty)
        }
    }

    @Test("client certificates authenticate")
    func clientCertificate() async throws {
        try await TestCluster.with(user: .clientCertificate(user: "admin")) { cluster in
            let namespaces = try await cluster.client.list(TestCluster.namespaces)
            #expect(namespaces.items.count == 4)
        }
    }

    @Test("plain HTTP servers work too")
    func plainHTTP() async throws {
        var options = KubeTestServer.Options()
        options.tls = false
        try await TestCluster.with(options) { cluster in
            #expect(cluster.server.url.hasPrefix("http://"))
            let namespaces = try await cluster.client.list(TestCluster.namespaces)
            #expect(namespaces.items.count == 4)
        }
    }

    @Test("an unreachable server is a transport error naming it")
    func unreachable() async throws {
        var configuration = KubeClientConfiguration(server: "https://127.0.0.1:1", origin: "test")
        configuration.connectTimeout = .seconds(2)
        let client = try KubeClient(configuration: configuration)
        let error = await #expect(throws: KubeAPIError.self) { try await client.discover() }
        #expect(error?.code == .transport)
        #expect(error?.message.contains("127.0.0.1:1") == true)
        try await client.shutdown()
    }

    @Test("exec credential plugins: run once, cached until expiry, run again after a 401")
    func execPlugin() async throws {
        let directory = try temporaryDirectory()
        let tokenFile = directory.appendingPathComponent("token").path
        let runs = directory.appendingPathComponent("runs").path
        let script = directory.appendingPathComponent("plugin.sh").path
        try """
            #!/bin/sh
            echo run >> "\(runs)"
            case "$KUBERNETES_EXEC_INFO" in *ExecCredential*) ;; *) echo "no exec info" >&2; exit 3;; esac
            printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"2099-01-01T00:00:00Z"}}' "$(cat "\(tokenFile)")"
            """.write(toFile: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        try "first-token".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let plugin = ExecCredentialPlugin(command: script)
        try await TestCluster.with(configure: { $0.credentials = .exec(plugin) }) { cluster in
            try await cluster.server.addUser(.admin(token: "first-token"))
            _ = try await cluster.client.list(TestCluster.namespaces)
            _ = try await cluster.client.list(TestCluster.namespaces)
            #expect(try String(contentsOfFile: runs, encoding: .utf8).split(separator: "\n").count == 1)
            // The token expires on the server side: the next request gets a 401 and the plugin runs again.
            try await cluster.server.revokeToken("first-token")
            try await cluster.server.addUser(.admin(token: "second-token"))
            try "second-token".write(toFile: tokenFile, atomically: true, encoding: .utf8)
            #expect(try await cluster.client.list(TestCluster.namespaces).items.count == 4)
            #expect(try String(contentsOfFile: runs, encoding: .utf8).split(separator: "\n").count == 2)
        }
        let failing = ExecCredentialPlugin(command: "/bin/false")
        try await TestCluster.with(configure: { $0.credentials = .exec(failing) }) { cluster in
            let error = await #expect(throws: KubeAPIError.self) { try await cluster.client.list(TestCluster.namespaces) }
            #expect(error?.code == .credentials)
            #expect(error?.description.contains("/bin/false") == true)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    @Test("a rotated token file is read again after a 401")
    func tokenFileRotation() async throws {
        let directory = try temporaryDirectory()
        let tokenFile = directory.appendingPathComponent("token").path
        try "old-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        try await TestCluster.with(configure: { $0.credentials = .tokenFile(tokenFile) }) { cluster in
            try await cluster.server.addUser(.admin(token: "old-token"))
            _ = try await cluster.client.list(TestCluster.namespaces)
            try await cluster.server.revokeToken("old-token")
            try await cluster.server.addUser(.admin(token: "new-token"))
            try "new-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
            #expect(try await cluster.client.list(TestCluster.namespaces).items.count == 4)
            // A token that stays refused is a 401, once, not a loop.
            try await cluster.server.revokeToken("new-token")
            let error = await #expect(throws: KubeAPIError.self) { try await cluster.client.list(TestCluster.namespaces) }
            #expect(error?.isUnauthorized == true)
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

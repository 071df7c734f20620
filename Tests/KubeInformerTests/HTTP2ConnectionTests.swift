import BridgeCore
import Foundation
import KubeAPI
import KubeInformer
import KubeModel
import KubeTestServer
import Testing
import TestSupport

/// The client against a server that speaks HTTP/2 as kube-apiserver does: a limit of concurrent
/// streams per connection, GOAWAY, streams reset and connections dropped.
@Suite("Watches and requests over HTTP/2 as kube-apiserver serves it")
struct HTTP2ConnectionTests {
    static func options(streamLimit: Int = 100) -> KubeTestServer.Options {
        var options = KubeTestServer.Options()
        options.http2 = true
        options.maxConcurrentStreams = streamLimit
        return options
    }

    static func watcher(_ cluster: TestCluster, _ collector: EventCollector, observer: WatcherObserver = WatcherObserver()) -> RunningWatcher {
        RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(), observer: observer, logger: .test), collector: collector)
    }

    static func create(_ cluster: TestCluster, _ names: some Sequence<Int>) async throws {
        for index in names { _ = try await cluster.createConfigMap("cm-\(index)") }
    }

    @Test("more watches than the server allows streams on a connection: every one is served and delivers, and discovery and writes are answered while they are open",
          arguments: [(limit: 7, watches: 20), (limit: 100, watches: 130)])
    func moreWatchesThanStreams(limit: Int, watches: Int) async throws {
        try await TestCluster.with(Self.options(streamLimit: limit)) { cluster in
            let collectors = (0..<watches).map { _ in EventCollector() }
            let running = collectors.map { Self.watcher(cluster, $0) }
            try await waitUntil(timeout: .seconds(120)) { try await cluster.server.openWatchCount() >= watches }
            #expect(try await cluster.client.discover().resources.contains { $0.gvr == TestCluster.configmaps })
            _ = try await cluster.createConfigMap("after-every-watch")
            for collector in collectors { try await collector.waitForChanges(1) }
            let served = try await cluster.server.connections()
            #expect(served.map(\.streamsRefused).reduce(0, +) == 0, "streams refused: \(served)")
            let connections = cluster.client.connections
            #expect(connections.requestsHTTP2 == 1, "\(connections)")
            #expect(connections.streams >= watches, "\(connections)")
            for watcher in running { await watcher.stop() }
        }
    }

    /// A watch that has delivered cm-0 to cm-4, then `fault`, then cm-5 to cm-9: every one arrives,
    /// once, in order, and the watch resumed from its version instead of listing again.
    static func acrossFault(_ cluster: TestCluster, _ fault: () async throws -> Void) async throws {
        let observer = WatcherObserver()
        let collector = EventCollector()
        let watcher = Self.watcher(cluster, collector, observer: observer)
        try await waitUntil { try await cluster.server.openWatchCount() == 1 }
        try await Self.create(cluster, 0..<5)
        try await collector.waitForChanges(5)
        try await fault()
        try await Self.create(cluster, 5..<10)
        try await collector.waitForChanges(10)
        await watcher.stop()
        #expect(await collector.described() == (0..<10).map { "added cm-\($0)" })
        #expect(observer.count(.relisted) == 0)
    }

    @Test("a GOAWAY: the watches go on, or with their streams ended (as at shutdown) resume from their last version; a request past the GOAWAY is sent again on a new connection; nothing is lost or repeated",
          arguments: [false, true])
    func goAway(endingStreams: Bool) async throws {
        try await TestCluster.with(Self.options()) { cluster in
            try await Self.acrossFault(cluster) {
                try await cluster.server.goAway(endingStreams: endingStreams)
                // Sent before or after the client has read the GOAWAY: answered either way, without an error.
                for index in 0..<5 {
                    #expect(try await cluster.client.get(TestCluster.configmaps, namespace: "default", name: "cm-\(index)").metadata.name == "cm-\(index)")
                }
            }
            // The connection that was sent away ends once its streams have, and the client lets it go.
            try await waitUntil { cluster.client.connections.requestsHTTP2 == 1 }
        }
    }

    @Test("every connection dropped at once: the watches resume from their last version, requests open a new connection, nothing is lost or repeated")
    func droppedConnections() async throws {
        try await TestCluster.with(Self.options()) { cluster in
            try await Self.acrossFault(cluster) {
                try await cluster.server.dropConnections()
                // A request sent before the pool has seen the close fails with a sentence; the next gets a new connection.
                try await waitUntil { (try? await cluster.client.discover()) != nil }
            }
        }
    }

    @Test("a request's stream reset by the server: a GET is sent again and answered; a write fails with a sentence naming the server; the connection goes on")
    func streamReset() async throws {
        try await TestCluster.with(Self.options()) { cluster in
            _ = try await cluster.createConfigMap("a")
            try await cluster.server.inject(FaultRule(verbs: [.get], resource: "configmaps", action: .dropConnection, count: 1))
            #expect(try await cluster.client.get(TestCluster.configmaps, namespace: "default", name: "a").metadata.name == "a")
            let gets = try await cluster.server.requestLog().filter { $0.hasPrefix("GET /api/v1/namespaces/default/configmaps/a ") }
            #expect(gets.map { $0.split(separator: " ").last! } == ["0", "200"], "the GET reset, then sent again: \(gets)")
            try await cluster.server.inject(FaultRule(verbs: [.patch], resource: "configmaps", action: .dropConnection, count: 1))
            do {
                _ = try await cluster.client.mergePatch(TestCluster.configmaps, namespace: "default", name: "a", json: #"{"data":{"k":"w"}}"#)
                Issue.record("the reset write succeeded")
            } catch let error as KubeAPIError {
                #expect(error.code == .transport)
                #expect(error.message.contains("cancelled the request's HTTP/2 stream (CANCEL)"), "\(error)")
                #expect(error.message.contains(cluster.server.url), "\(error)")
                #expect(!error.message.contains("StreamClosed"), "\(error)")
            }
            #expect(try await cluster.client.mergePatch(TestCluster.configmaps, namespace: "default", name: "a", json: #"{"data":{"k":"w"}}"#).metadata.name == "a")
            #expect(try await cluster.server.connections().filter { $0.applicationProtocol == "h2" }.count == 1)
        }
    }
}

import ArgumentParser
import BridgeCore
import Foundation
import KubeAPI
import KubeInformer
import KubeModel
import Logging
import Synchronization

/// A consumer that can be held: while held, `accept` does not return, as a sink in an outage.
final class Gate: Sendable {
    private let state = Mutex<(held: Bool, received: Int)>((false, 0))

    func hold() { state.withLock { $0.held = true } }
    func release() { state.withLock { $0.held = false } }
    var received: Int { state.withLock { $0.received } }

    func accept(_ event: ResourceEvent) async {
        while state.withLock({ $0.held }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if case .change = event { state.withLock { $0.received += 1 } }
    }
}

/// A watcher of every ConfigMap, listing in pages (the path whose memory is measured).
func configMapWatcher(_ server: ServerProcess) -> Watcher {
    let configmaps = APIResource(gvr: GroupVersionResource(group: "", version: "v1", resource: "configmaps"), kind: "ConfigMap",
                                 namespaced: true, verbs: ["list", "watch"], isPreferredVersion: true)
    var options = WatcherOptions()
    options.useStreamingLists = false
    return Watcher(resource: configmaps, client: server.client, options: options, logger: benchLogger())
}

struct SlowConsumer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slow-consumer",
        abstract: "A consumer that stops while changes pile up upstream: memory must stay flat.")

    @OptionGroup var server: ServerOptions

    @Option(help: "Changes made while the consumer is stopped.")
    var pending = 100_000

    @Option(help: "Approximate size of each object, in bytes.")
    var bytes = 1024

    @Option(help: "Fail when memory grows by more than this many MiB while the changes are pending (nothing may pile up).")
    var maxPendingGrowthMib = 16

    @Option(help: "Fail when memory peaks more than this many MiB above the baseline while draining (the known-objects index grows with the objects).")
    var maxGrowthMib = 96

    @Flag(help: "Also print the measurements as one JSON line (bytes), for a test to judge.")
    var json = false

    func run() async throws {
        let server = try await ServerProcess(binary: server.kubebridge)
        do {
            try await measure(server)
        } catch {
            // The server process would outlive this one and hold the output open for whoever waits on it.
            await server.stop()
            print("FAIL: \(error)")
            throw error
        }
    }

    private func measure(_ server: ServerProcess) async throws {
        let gate = Gate()
        let watcher = configMapWatcher(server)
        let task = Task { try await watcher.run { await gate.accept($0) } }
        try await Task.sleep(for: .milliseconds(500))
        let baseline = residentBytes()
        gate.hold()
        let started = ContinuousClock.now
        try await server.generate(count: pending, bytes: bytes)
        print("server made \(pending) changes of ~\(bytes) B in \(ContinuousClock.now - started) while the consumer was stopped")
        let whilePending = residentBytes()
        try await Task.sleep(for: .seconds(2))
        let stillPending = residentBytes()
        gate.release()
        var peak = max(whilePending, stillPending)
        let draining = ContinuousClock.now
        while gate.received < pending {
            peak = max(peak, residentBytes())
            try await Task.sleep(for: .milliseconds(50))
        }
        let drained = ContinuousClock.now - draining
        peak = max(peak, residentBytes())
        task.cancel()
        _ = try? await task.value
        await server.stop()
        let growth = peak - baseline
        let pendingGrowth = max(whilePending, stillPending) - baseline
        print("resident memory: baseline \(mib(baseline)), with \(pending) changes pending \(mib(whilePending)) then \(mib(stillPending)), peak while draining \(mib(peak)) (+\(mib(growth)))")
        print("delivered \(gate.received) changes in \(drained) once the consumer resumed")
        if json {
            let measured: [String: Int] = ["baseline": baseline, "whilePending": whilePending, "stillPending": stillPending, "peak": peak,
                                           "delivered": gate.received, "pending": pending]
            print(String(decoding: try JSONSerialization.data(withJSONObject: measured, options: [.sortedKeys]), as: UTF8.self))
        }
        if pendingGrowth > maxPendingGrowthMib * 1_048_576 {
            print("FAIL: memory grew by \(mib(pendingGrowth)) while the changes were pending, more than \(maxPendingGrowthMib) MiB")
            throw ExitCode(1)
        }
        if growth > maxGrowthMib * 1_048_576 {
            print("FAIL: memory peaked \(mib(growth)) above the baseline, more than \(maxGrowthMib) MiB")
            throw ExitCode(1)
        }
        print("PASS: flat while pending (+\(mib(pendingGrowth))), and within \(maxGrowthMib) MiB while draining")
    }
}

struct KnownObjectsMemory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "known-objects",
        abstract: "Memory per watched object: list N objects and keep their index.")

    @OptionGroup var server: ServerOptions

    @Option(help: "Objects of the watched resource.")
    var objects = 100_000

    func run() async throws {
        let server = try await ServerProcess(binary: server.kubebridge)
        try await server.generate(count: objects, bytes: 1024)
        let gate = Gate()
        let watcher = configMapWatcher(server)
        try await Task.sleep(for: .milliseconds(300))
        let baseline = residentBytes()
        let started = ContinuousClock.now
        let task = Task { try await watcher.run { await gate.accept($0) } }
        while gate.received < objects { try await Task.sleep(for: .milliseconds(20)) }
        let listed = ContinuousClock.now - started
        try await Task.sleep(for: .seconds(1))
        let after = residentBytes()
        task.cancel()
        _ = try? await task.value
        await server.stop()
        print("listed \(objects) objects of ~1 KiB in \(listed)")
        print("resident memory: \(mib(baseline)) before, \(mib(after)) while watching: \((after - baseline) / max(objects, 1)) bytes per known object")
    }
}

struct IdleResources: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle-resources",
        abstract: "Memory and connections per watched resource: every built-in plus N CRDs, all idle.")

    @OptionGroup var server: ServerOptions

    @Option(help: "CustomResourceDefinitions to add to the built-in resources.")
    var crds = 146

    func run() async throws {
        let server = try await ServerProcess(binary: server.kubebridge)
        let crdResource = GroupVersionResource(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions")
        for index in 0..<crds {
            _ = try await server.client.create(crdResource, namespace: nil, json: """
                {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"things\(index).bench\(index).example.com"},\
                "spec":{"group":"bench\(index).example.com","names":{"plural":"things\(index)","singular":"thing\(index)","kind":"Thing\(index)"},\
                "scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}
                """)
        }
        try await Task.sleep(for: .seconds(1))
        var options = InformerOptions()
        options.selection.include = ["*/*/*", "core/v1/events", "events.k8s.io/v1/events", "coordination.k8s.io/v1/leases"]
        let supervisor = InformerSupervisor(client: server.client, options: options, logger: benchLogger())
        let gate = Gate()
        let baseline = residentBytes()
        let task = Task { try await supervisor.run { await gate.accept($0) } }
        let started = ContinuousClock.now
        while !supervisor.isSynced { try await Task.sleep(for: .milliseconds(50)) }
        let synced = ContinuousClock.now - started
        try await Task.sleep(for: .seconds(2))
        let after = residentBytes()
        let watched = supervisor.watchedResources.count
        let openWatches = try await server.status()["openWatches"] as? Int ?? -1
        let connections = server.client.connections
        let cpuBefore = cpuSeconds()
        try await Task.sleep(for: .seconds(10))
        let idleCPU = cpuSeconds() - cpuBefore
        task.cancel()
        _ = try? await task.value
        await server.stop()
        print("watching \(watched) resources (synced in \(synced)); the server counts \(openWatches) open watches (one more follows CRDs)")
        print("resident memory: \(mib(baseline)) before, \(mib(after)) while watching: \((after - baseline) / max(watched, 1) / 1024) KiB per watched resource")
        print("connections to the server: \(connections.streams) for lists and watches, \(connections.requestsHTTP2) HTTP/2 and \(connections.requestsHTTP1) HTTP/1.1 for other requests")
        print(String(format: "CPU while idle: %.3f s in 10 s", idleCPU))
    }
}

import ArgumentParser
import Foundation
import KubeAPI
import KubeModel

struct Discover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the resources the cluster serves that kubebridge can watch.",
        discussion: """
            Prints one line per watchable resource (it supports list and watch): its group, version, \
            resource, kind, whether it is namespaced, and its verbs. Only each group's preferred \
            version is shown, as the bridge watches only that one, so one object yields one event.

            Examples:
              kubebridge discover
              kubebridge discover --context staging --output json
              kubebridge discover --all-versions
            """)

    @OptionGroup var cluster: ClusterOptions

    enum Output: String, ExpressibleByArgument, CaseIterable {
        case table, json
    }

    @Option(name: [.short, .long], help: "Output format: table or json.")
    var output: Output = .table

    @Flag(help: "Show every served version, not only each group's preferred one.")
    var allVersions = false

    @Flag(help: "Also show resources that cannot be watched (no list or watch verb).")
    var all = false

    func run() async throws {
        KubeBridge.bootstrapLogging(level: .warning)
        let client: KubeClient
        do {
            client = try KubeClient(configuration: try cluster.load())
        } catch {
            throw fail(describe(error))
        }
        let result: DiscoveryResult
        do {
            result = try await client.discover()
        } catch {
            try? await client.shutdown()
            throw fail(describe(error))
        }
        try? await client.shutdown()
        var resources = allVersions ? result.resources : result.preferred
        if !all { resources = resources.filter(\.isWatchable) }
        resources.sort { ($0.group, $0.resource, $0.version) < ($1.group, $1.resource, $1.version) }
        switch output {
        case .json:
            print(DiscoveryPrinter.json(resources))
        case .table:
            print(DiscoveryPrinter.table(resources), terminator: "")
            print("\(resources.count) resources (discovery: \(result.method.rawValue))")
        }
        for failure in result.failures {
            FileHandle.standardError.write(Data("kubebridge: warning: discovery failed for \(failure)\n".utf8))
        }
    }
}

enum DiscoveryPrinter {
    static func table(_ resources: [APIResource]) -> String {
        let header = ["GROUP", "VERSION", "RESOURCE", "KIND", "NAMESPACED", "VERBS"]
        let rows = resources.map { r in
            [r.group.isEmpty ? "core" : r.group, r.version, r.resource, r.kind, r.namespaced ? "true" : "false", r.verbs.joined(separator: ",")]
        }
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                i == cells.count - 1 ? cell : cell.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0)
            }.joined() + "\n"
        }
        return ([header] + rows).map(line).joined()
    }

    static func json(_ resources: [APIResource]) -> String {
        let objects: [[String: Any]] = resources.map { r in
            [
                "group": r.group, "version": r.version, "resource": r.resource, "kind": r.kind, "namespaced": r.namespaced,
                "verbs": r.verbs, "preferredVersion": r.isPreferredVersion, "shortNames": r.shortNames,
            ]
        }
        let data = (try? JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

import Foundation
import KubeTestServer
import Testing
import TestSupport
import Yams

@Suite("kubebridge rbac")
struct RBACTests {
    struct Rule {
        var groups: [String]
        var resources: [String]
        var verbs: [String]

        func allows(_ verb: RequestVerb, _ definition: ResourceDefinition) -> Bool {
            verbs.contains(verb.rawValue) && (groups.contains("*") || groups.contains(definition.group))
                && (resources.contains("*") || resources.contains(definition.resource))
        }
    }

    /// The ClusterRole's resource rules from `kubebridge rbac`'s output.
    static func rules(_ yaml: String) throws -> [Rule] {
        let documents = try Yams.load_all(yaml: yaml).compactMap { $0 as? [String: Any] }
        let role = try #require(documents.first { $0["kind"] as? String == "ClusterRole" })
        #expect(documents.contains { $0["kind"] as? String == "ClusterRoleBinding" })
        return (role["rules"] as? [[String: Any]] ?? []).compactMap { rule in
            guard let groups = rule["apiGroups"] as? [String], let resources = rule["resources"] as? [String] else { return nil }
            return Rule(groups: groups, resources: resources, verbs: rule["verbs"] as? [String] ?? [])
        }
    }

    @Test("the role it prints is enough: kubebridge run as a user with exactly those rules watches everything it selects, and nothing else is granted")
    func leastPrivilege() async throws {
        let server = try await RunCommandTests.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let include = ["core/v1/configmaps", "apps/v1/deployments", "example.com/*/*"]
        let probe = try BridgeProcess(server: server, directory: directory, include: include)
        let printed = try await KubeBridgeBinary.run(["rbac", "--config", probe.configPath, "--namespace", "ops"])
        #expect(printed.status == 0, "\(printed.stderr)")
        let rules = try Self.rules(printed.stdout)
        #expect(!rules.contains { $0.groups.contains("*") || $0.resources.contains("*") && !$0.groups.contains("example.com") }, "\(printed.stdout)")
        #expect(rules.allSatisfy { Set($0.verbs).isSubset(of: ["get", "list", "watch"]) })
        #expect(printed.stdout.contains("namespace: ops"))

        try await server.addUser(TestUser(name: "kubebridge", token: "rbac-token") { verb, definition, _ in
            rules.contains { $0.allows(verb, definition) }
        })
        let (crd, _) = try await server.perform("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: TestCluster.widgetCRD)
        #expect(crd == 201)
        _ = try await server.perform("POST", "/api/v1/namespaces/default/configmaps", body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"seen"}}"#)
        _ = try await server.perform("POST", "/api/v1/namespaces/default/secrets", body: #"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"unseen"}}"#)
        let bridge = try BridgeProcess(server: server, directory: directory, include: include, user: .token("rbac-token"))
        try bridge.start()
        try await waitUntil(timeout: .seconds(60)) { bridge.events().contains { $0["name"] as? String == "seen" } }
        let address = try await bridge.operationsAddress()
        // Ready: every watch has listed, or has been found forbidden.
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(100)) { try await OperationsTests.get("http://\(address)/readyz").status == 200 }
        let status = try await OperationsTests.get("http://\(address)/status").body
        #expect(!status.contains("forbidden"), "\(status)")
        #expect(status.contains("example.com/v1/widgets") && status.contains("apps/v1/deployments"), "\(status)")
        #expect(!bridge.events().contains { $0["name"] as? String == "unseen" })
        #expect(!rules.contains { ($0.groups.contains("") || $0.groups.contains("*")) && ($0.resources.contains("secrets") || $0.resources.contains("*")) },
                "the role grants Secrets, which the configuration does not select")
        #expect(await bridge.stop() == 0)
        try await server.stop()
    }

    @Test("patterns RBAC cannot narrow are granted wide, and the output says so")
    func partialWildcards() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("bridge.yaml").path
        try "resources:\n  include: [\"*.example.com/*/*\", \"apps/v1/deploy*\"]\n  exclude: [apps/v1/deployments]\nsinks:\n  - {type: file, path: x}\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let printed = try await KubeBridgeBinary.run(["rbac", "--config", config])
        #expect(printed.status == 0)
        #expect(printed.stdout.contains("# *.example.com/*/*: RBAC has no partial wildcards"))
        #expect(printed.stdout.contains("# apps/v1/deploy*: RBAC has no partial wildcards"))
        #expect(printed.stdout.contains("# resources.exclude cannot be expressed in RBAC"))
        let rules = try Self.rules(printed.stdout)
        #expect(rules.contains { $0.groups == ["*"] && $0.resources == ["*"] })
    }
}

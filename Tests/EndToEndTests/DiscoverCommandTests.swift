import Foundation
import KubeAPI
import KubeTestServer
import Testing
import TestSupport

/// `kubebridge discover` run as a process, the way a new user meets it.
@Suite("kubebridge discover, as a user runs it")
struct DiscoverCommandTests {
    func rows(_ output: String) -> [[String]] {
        output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
    }

    @Test("lists the built-ins, a CRD created a moment before, and forgets it once deleted")
    func crdComesAndGoes() async throws {
        try await TestCluster.with { cluster in
            let kubeconfig = cluster.directory.appendingPathComponent("kubeconfig").path
            let home = cluster.directory.path
            let before = try await KubeBridgeBinary.run(["discover", "--kubeconfig", kubeconfig], environment: ["HOME": home])
            #expect(before.status == 0, "\(before.stderr)")
            let table = rows(before.stdout)
            #expect(table.first == ["GROUP", "VERSION", "RESOURCE", "KIND", "NAMESPACED", "VERBS"])
            #expect(table.contains(["core", "v1", "configmaps", "ConfigMap", "true", "create,delete,deletecollection,get,list,patch,update,watch"]))
            #expect(table.contains { $0.starts(with: ["apps", "v1", "deployments", "Deployment", "true"]) })
            #expect(table.contains { $0.starts(with: ["core", "v1", "namespaces", "Namespace", "false"]) })
            #expect(!table.contains { $0.count > 2 && $0[2] == "tokenreviews" }, "resources without list and watch are left out")
            #expect(!table.contains { $0.count > 2 && $0[0] == "autoscaling" && $0[1] == "v1" }, "only preferred versions")
            #expect(!table.contains { $0.count > 2 && $0[2] == "widgets" })

            _ = try await cluster.client.create(TestCluster.crds, namespace: nil, json: TestCluster.widgetCRD)
            try await Task.sleep(for: .milliseconds(300))
            let with = try await KubeBridgeBinary.run(["discover", "--kubeconfig", kubeconfig], environment: ["HOME": home])
            #expect(with.status == 0)
            #expect(rows(with.stdout).contains { $0.starts(with: ["example.com", "v1", "widgets", "Widget", "true"]) })

            try await cluster.client.delete(TestCluster.crds, namespace: nil, name: "widgets.example.com")
            try await Task.sleep(for: .milliseconds(300))
            let after = try await KubeBridgeBinary.run(["discover"], environment: ["HOME": home, "KUBECONFIG": kubeconfig])
            #expect(after.status == 0)
            #expect(!rows(after.stdout).contains { $0.count > 2 && $0[2] == "widgets" })
        }
    }

    @Test("kubebridge test-apiserver serves what discover reads, and SIGTERM stops it with exit code 0")
    func testAPIServerCommand() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let kubeconfig = directory.appendingPathComponent("test.kubeconfig").path
        let output = directory.appendingPathComponent("server.log")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: KubeBridgeBinary.path)
        server.arguments = ["test-apiserver", "--kubeconfig-out", kubeconfig]
        let handle = try FileHandle(forWritingTo: output)
        server.standardOutput = handle
        server.standardError = handle
        try server.run()
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(50)) {
            ((try? String(contentsOf: output, encoding: .utf8)) ?? "").contains("listening on https://127.0.0.1:")
        }
        let discovered = try await KubeBridgeBinary.run(["discover", "--kubeconfig", kubeconfig], environment: ["HOME": directory.path])
        #expect(discovered.status == 0, "\(discovered.stderr)")
        #expect(rows(discovered.stdout).contains { $0.starts(with: ["core", "v1", "configmaps", "ConfigMap", "true"]) })
        server.terminate()
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(50)) { !server.isRunning }
        #expect(server.terminationReason == .exit && server.terminationStatus == 0, "\((try? String(contentsOf: output, encoding: .utf8)) ?? "")")
    }

    @Test("--output json is machine-readable")
    func jsonOutput() async throws {
        try await TestCluster.with { cluster in
            let kubeconfig = cluster.directory.appendingPathComponent("kubeconfig").path
            let result = try await KubeBridgeBinary.run(["discover", "--kubeconfig", kubeconfig, "--output", "json", "--all-versions"])
            #expect(result.status == 0)
            let parsed = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]
            let entries = try #require(parsed)
            #expect(entries.contains { $0["resource"] as? String == "horizontalpodautoscalers" && $0["version"] as? String == "v1" && $0["preferredVersion"] as? Bool == false })
            #expect(entries.allSatisfy { ($0["verbs"] as? [String])?.contains("watch") == true })
        }
    }

    /// Each bad input: the command fails with exit code 2 and one line that says what to fix.
    @Test("bad input: one line naming the file, field or host, exit code 2, no stack trace")
    func badInput() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try await KubeTestServer.start()
        defer { Task { try? await server.stop() } }
        func write(_ name: String, _ text: String) throws -> String {
            let path = directory.appendingPathComponent(name).path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let good = try write("good", try server.kubeconfig())
        let otherCA = base64(try TestPKI().caCertificatePEM)
        let goodCA = base64(server.pki!.caCertificatePEM)
        let cases: [(arguments: [String], expected: [String])] = [
            (["--kubeconfig", "/nonexistent/config"], ["/nonexistent/config does not exist"]),
            (["--kubeconfig", good, "--context", "prod"], ["context \"prod\" not found", "available: kubebridge-test"]),
            (["--kubeconfig", try write("badb64", try server.kubeconfig().replacingOccurrences(of: goodCA, with: "not*base64"))],
             ["certificate-authority-data", "not valid base64"]),
            (["--kubeconfig", try write("wrongca", try server.kubeconfig().replacingOccurrences(of: goodCA, with: otherCA))],
             ["did not verify", "certificate-authority"]),
            (["--kubeconfig", try write("notpem", try server.kubeconfig().replacingOccurrences(of: goodCA, with: base64("hello")))],
             ["does not hold a PEM certificate"]),
            (["--kubeconfig", try write("down", try server.kubeconfig().replacingOccurrences(of: server.url, with: "https://127.0.0.1:1"))],
             ["127.0.0.1:1", "connection refused"]),
            (["--kubeconfig", try write("expired", try server.kubeconfig(user: .token("expired-token")))], ["401 Unauthorized"]),
            (["--kubeconfig", try write("yaml", "clusters: [\n")], ["is not valid YAML"]),
        ]
        for (arguments, expected) in cases {
            let result = try await KubeBridgeBinary.run(["discover"] + arguments, environment: ["HOME": directory.path])
            #expect(result.status == 2, "\(arguments): exit \(result.status), stderr \(result.stderr)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.hasPrefix("kubebridge: error: "), "\(arguments): \(result.stderr)")
            for fragment in expected {
                #expect(result.stderr.contains(fragment), "\(arguments): \(result.stderr) should mention \(fragment)")
            }
            #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("Stack dump"))
        }
        let nothing = try await KubeBridgeBinary.run(["discover"], environment: ["HOME": directory.path])
        #expect(nothing.status == 2)
        #expect(nothing.stderr.contains("kubebridge demo"))
    }

    @Test("--help teaches, with examples")
    func help() async throws {
        let root = try await KubeBridgeBinary.run(["--help"])
        #expect(root.status == 0)
        #expect(root.stdout.contains("kubebridge discover"))
        #expect(root.stdout.contains("kubebridge demo"))
        let discover = try await KubeBridgeBinary.run(["discover", "--help"])
        #expect(discover.stdout.contains("Examples:"))
        #expect(discover.stdout.contains("--kubeconfig"))
    }

    @Test("kubebridge demo bridges a churning test server to a file, a CRD added mid-run included, and prints what lands")
    func demo() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try await KubeBridgeBinary.run(["demo", "--duration", "8", "--directory", directory.appendingPathComponent("demo").path],
                                                    environment: ["HOME": directory.path])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.contains { $0.contains("added") && $0.contains("apiextensions.k8s.io/v1/customresourcedefinitions") && $0.contains("widgets.example.com") })
        #expect(lines.contains { $0.contains("example.com/v1/widgets") && $0.contains("added") })
        #expect(lines.contains { $0.contains("apps/v1/deployments") && $0.contains("modified") })
        #expect(lines.contains { $0.contains("core/v1/secrets") && $0.contains("deleted") })
        #expect(result.stdout.contains("events delivered ("))
        let events = try String(contentsOfFile: directory.appendingPathComponent("demo/events.jsonl").path, encoding: .utf8)
        #expect(events.split(separator: "\n").count > 50, "the file sink holds the events")
    }

    func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
}

import Foundation
import KubeAPI
import KubeTestServer
import Testing
import TestSupport
import Yams

/// `deploy/` cannot be applied to a cluster here, so it is checked as far as can be without one:
/// every document parses and has what its kind needs, the configurations pass check-config, the
/// ClusterRole is what `kubebridge rbac` prints, and kustomize builds every overlay.
@Suite("deploy/ manifests")
struct DeployManifestTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let deploy = root.appendingPathComponent("deploy")
    static let kustomizations = ["base", "overlays/kafka", "overlays/nats", "overlays/webhook"]
    static let environment = ["KAFKA_PASSWORD": "secret", "WEBHOOK_SECRET": "whsec_" + Data("deploy-test".utf8).base64EncodedString()]

    static func yamlFiles() throws -> [URL] {
        let files = FileManager.default.enumerator(at: deploy, includingPropertiesForKeys: nil)?.compactMap { $0 as? URL } ?? []
        return files.filter { $0.pathExtension == "yaml" }.sorted { $0.path < $1.path }
    }

    static func documents(_ text: String) throws -> [[String: Any]] {
        try Yams.load_all(yaml: text).compactMap { $0 as? [String: Any] }
    }

    @Test("every document parses and has apiVersion, kind and a name; every kustomization lists files that exist")
    func wellFormed() throws {
        let files = try Self.yamlFiles()
        #expect(files.count >= 15)
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for document in try Self.documents(text) {
                let name = file.path.replacingOccurrences(of: Self.root.path + "/", with: "")
                if file.lastPathComponent == "kubebridge.yaml" { continue }
                #expect(document["apiVersion"] is String, "\(name)")
                let kind = document["kind"] as? String
                #expect(kind != nil, "\(name)")
                if kind == "Kustomization" {
                    let listed = (document["resources"] as? [String] ?? []) + (document["patches"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String }
                        + (document["configMapGenerator"] as? [[String: Any]] ?? []).flatMap { $0["files"] as? [String] ?? [] }
                    for path in listed {
                        #expect(FileManager.default.fileExists(atPath: file.deletingLastPathComponent().appendingPathComponent(path).path), "\(name): \(path)")
                    }
                } else {
                    #expect((document["metadata"] as? [String: Any])?["name"] is String, "\(name)")
                }
            }
        }
    }

    @Test("the Deployment: two replicas that know their pod's name, non-root, read-only root filesystem, no capabilities, probes on the operations port, the configuration and state mounted where the configuration says")
    func deployment() throws {
        let documents = try Self.documents(String(contentsOf: Self.deploy.appendingPathComponent("base/deployment.yaml"), encoding: .utf8))
        let deployment = try #require(documents.first)
        #expect((deployment["spec"] as? [String: Any])?["replicas"] as? Int == 2)
        let template = try #require((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])
        let pod = try #require(template["spec"] as? [String: Any])
        let podSecurity = try #require(pod["securityContext"] as? [String: Any])
        #expect(podSecurity["runAsNonRoot"] as? Bool == true)
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        let security = try #require(container["securityContext"] as? [String: Any])
        #expect(security["readOnlyRootFilesystem"] as? Bool == true && security["allowPrivilegeEscalation"] as? Bool == false)
        #expect((security["capabilities"] as? [String: Any])?["drop"] as? [String] == ["ALL"])
        let port = try #require((container["ports"] as? [[String: Any]])?.first)
        #expect(port["containerPort"] as? Int == 8080)
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = (container[probe] as? [String: Any])?["httpGet"] as? [String: Any]
            #expect(get?["path"] as? String == path && get?["port"] as? String == port["name"] as? String, "\(probe)")
        }
        #expect((container["resources"] as? [String: Any])?["requests"] != nil)
        let mounts = Dictionary(uniqueKeysWithValues: (container["volumeMounts"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0["mountPath"] as? String ?? "") })
        #expect(mounts["config"] == "/etc/kubebridge" && mounts["state"] == "/var/lib/kubebridge" && mounts["tmp"] == "/tmp")
        #expect((container["args"] as? [String])?.contains("/etc/kubebridge/kubebridge.yaml") == true)
        let environment = (container["env"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(environment.contains("POD_NAME") && environment.contains("POD_NAMESPACE"))
        for kustomization in Self.kustomizations {
            let config = try String(contentsOf: Self.deploy.appendingPathComponent("\(kustomization)/kubebridge.yaml"), encoding: .utf8)
            #expect(config.contains("directory: /var/lib/kubebridge") && config.contains("address: \":8080\"") && config.contains("store: kubernetes")
                    && config.contains("leaderElection:"), "\(kustomization)")
        }
    }

    @Test("each configuration passes check-config", arguments: kustomizations)
    func configurations(kustomization: String) async throws {
        let result = try await KubeBridgeBinary.run(["check-config", Self.deploy.appendingPathComponent("\(kustomization)/kubebridge.yaml").path],
                                                    environment: Self.environment)
        #expect(result.status == 0, "\(result.stderr)")
    }

    @Test("base/rbac.yaml is what kubebridge rbac prints for the base configuration")
    func rbacInSync() async throws {
        let printed = try await KubeBridgeBinary.run(["rbac", "--config", Self.deploy.appendingPathComponent("base/kubebridge.yaml").path])
        #expect(printed.status == 0)
        #expect(printed.stdout == (try String(contentsOf: Self.deploy.appendingPathComponent("base/rbac.yaml"), encoding: .utf8)),
                "regenerate it: kubebridge rbac --config deploy/base/kubebridge.yaml > deploy/base/rbac.yaml")
    }

    static let kubectl = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test("kubectl kustomize builds the base and every overlay: every kind there, in the namespace, the ConfigMap the Deployment mounts",
          .enabled(if: kubectl != nil, "needs kubectl (1.27 or later: the kustomizations use labels and patches)"), arguments: kustomizations)
    func kustomize(kustomization: String) async throws {
        let result = try await ProcessRunner.runBinary(Self.kubectl!, ["kustomize", Self.deploy.appendingPathComponent(kustomization).path], timeout: 60)
        #expect(result.status == 0, "\(String(decoding: result.stderr, as: UTF8.self))")
        let documents = try Self.documents(String(decoding: result.stdout, as: UTF8.self))
        let kinds = Set(documents.compactMap { $0["kind"] as? String })
        #expect(kinds == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "Service",
                          "PodDisruptionBudget", "Deployment"])
        for document in documents where !["Namespace", "ClusterRole", "ClusterRoleBinding"].contains(document["kind"] as? String ?? "") {
            #expect((document["metadata"] as? [String: Any])?["namespace"] as? String == "kubebridge", "\(document["kind"] ?? "")")
        }
        let configMap = try #require(documents.first { $0["kind"] as? String == "ConfigMap" })
        let configName = (configMap["metadata"] as? [String: Any])?["name"] as? String
        let deployment = try #require(documents.first { $0["kind"] as? String == "Deployment" })
        let pod = ((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any]
        let volumes = pod?["volumes"] as? [[String: Any]] ?? []
        #expect(volumes.contains { ($0["configMap"] as? [String: Any])?["name"] as? String == configName }, "the Deployment mounts \(configName ?? "?")")
        let config = try #require((configMap["data"] as? [String: Any])?["kubebridge.yaml"] as? String)
        let expected = try String(contentsOf: Self.deploy.appendingPathComponent("\(kustomization)/kubebridge.yaml"), encoding: .utf8)
        #expect(config == expected)
    }

    @Test("kubectl apply -k creates every object of an overlay on the test API server, and the Deployment reads back with its probes",
          .enabled(if: kubectl != nil, "needs kubectl"))
    func applyToTestServer() async throws {
        let server = try await KubeTestServer.start()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let kubeconfig = directory.appendingPathComponent("kubeconfig").path
        try server.writeKubeconfig(to: kubeconfig)
        let result = try await ProcessRunner.runBinary(Self.kubectl!, ["--kubeconfig", kubeconfig, "apply", "--validate=false", "-k",
                                                                       Self.deploy.appendingPathComponent("overlays/webhook").path], timeout: 60)
        let output = String(decoding: result.stdout, as: UTF8.self)
        #expect(result.status == 0, "\(String(decoding: result.stderr, as: UTF8.self))")
        for created in ["namespace/kubebridge", "serviceaccount/kubebridge", "clusterrole.rbac.authorization.k8s.io/kubebridge",
                        "clusterrolebinding.rbac.authorization.k8s.io/kubebridge", "role.rbac.authorization.k8s.io/kubebridge",
                        "rolebinding.rbac.authorization.k8s.io/kubebridge", "service/kubebridge-metrics",
                        "poddisruptionbudget.policy/kubebridge", "deployment.apps/kubebridge"] {
            #expect(output.contains("\(created) created"), "\(output)")
        }
        let (status, body) = try await server.perform("GET", "/apis/apps/v1/namespaces/kubebridge/deployments/kubebridge")
        #expect(status == 200)
        #expect(body.contains("\"/readyz\"") && body.contains("kubebridge-webhook"), "\(body)")
        try await server.stop()
    }
}

import Foundation
import KubeAPI
import Testing
import TestSupport

@Suite("Kubeconfig and in-cluster configuration")
struct KubeConfigTests {
    let directory: URL

    init() throws {
        directory = try temporaryDirectory()
    }

    func write(_ name: String, _ text: String) throws -> String {
        let path = directory.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func config(cluster: String, server: String, user: String, token: String, context: String, current: String?) -> String {
        """
        apiVersion: v1
        kind: Config
        clusters:
        - name: \(cluster)
          cluster:
            server: \(server)
        users:
        - name: \(user)
          user:
            token: \(token)
        contexts:
        - name: \(context)
          context:
            cluster: \(cluster)
            user: \(user)
            namespace: ns-\(context)
        \(current.map { "current-context: \($0)" } ?? "")
        """
    }

    @Test("KUBECONFIG merges files: the first to define a name wins, and the first current-context")
    func mergeRules() throws {
        let first = try write("a", Self.config(cluster: "shared", server: "https://first:6443", user: "u", token: "t1", context: "one", current: nil))
        let second = try write("b", Self.config(cluster: "shared", server: "https://second:6443", user: "u2", token: "t2", context: "two", current: "two"))
        let missing = directory.appendingPathComponent("missing").path
        let configuration = try KubeConfigLoader.load(environment: ["KUBECONFIG": "\(first):\(missing):\(second)", "HOME": directory.path])
        // Context "two" from the second file, but its cluster name "shared" resolves to the first file's.
        #expect(configuration.server == "https://first:6443")
        #expect(configuration.namespace == "ns-two")
        guard case .token(let token) = configuration.credentials else { Issue.record("expected a token"); return }
        #expect(token == "t2")
        let chosen = try KubeConfigLoader.load(context: "one", environment: ["KUBECONFIG": "\(first):\(second)"])
        #expect(chosen.namespace == "ns-one")
    }

    @Test("an unknown context names the ones that exist")
    func unknownContext() throws {
        let path = try write("c", Self.config(cluster: "c", server: "https://h:1", user: "u", token: "t", context: "real", current: "real"))
        let error = #expect(throws: KubeConfigError.self) { try KubeConfigLoader.load(kubeconfig: path, context: "ghost") }
        #expect(error?.message.contains("context \"ghost\" not found") == true)
        #expect(error?.message.contains("available: real") == true)
    }

    @Test("paths inside a kubeconfig are relative to the file")
    func relativePaths() throws {
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("certs"), withIntermediateDirectories: true)
        _ = try write("certs/ca.crt", "PEM-CA")
        _ = try write("certs/token", "from-file")
        let path = try write("relative", """
            clusters:
            - name: c
              cluster: {server: "https://h:6443", certificate-authority: certs/ca.crt}
            users:
            - name: u
              user: {tokenFile: certs/token}
            contexts:
            - name: x
              context: {cluster: c, user: u}
            current-context: x
            """)
        let configuration = try KubeConfigLoader.load(kubeconfig: path)
        #expect(configuration.certificateAuthorityPEM == Array("PEM-CA".utf8))
        guard case .tokenFile(let tokenPath) = configuration.credentials else { Issue.record("expected a token file"); return }
        #expect(tokenPath == directory.appendingPathComponent("certs/token").path)
    }

    @Test("bad input gives one line naming the file, the field and the fix", arguments: [
        ("clusters:\n- name: c\n  cluster: {server: \"https://h:1\", certificate-authority-data: \"!!!not base64\"}\nusers: []\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
         "certificate-authority-data of cluster \"c\""),
        ("clusters:\n- name: c\n  cluster: {server: \"https://h:1\", certificate-authority: /nonexistent/ca.crt}\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
         "certificate-authority /nonexistent/ca.crt of cluster \"c\""),
        ("clusters:\n- name: c\n  cluster: {server: \"ftp://h\"}\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
         "is not an https:// URL"),
        ("clusters: []\ncontexts: []\n", "has no current-context"),
        ("clusters:\n- name: c\n  cluster: {server: \"https://h:1\", proxy-url: \"ftp://p:1\"}\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
         "proxy-url \"ftp://p:1\""),
        ("contexts:\n- name: x\n  context: {cluster: nowhere}\ncurrent-context: x\n", "names cluster \"nowhere\""),
        ("clusters: [oops\n", "is not valid YAML"),
        ("clusters:\n- name: c\n  cluster: {server: \"https://h:1\"}\nusers:\n- name: u\n  user: {auth-provider: {name: gcp}}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
         "auth-provider \"gcp\""),
        ("clusters:\n- name: c\n  cluster: {server: \"https://h:1\"}\nusers:\n- name: u\n  user: {exec: {command: x, apiVersion: client.authentication.k8s.io/v1alpha1}}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
         "v1alpha1"),
        ("clusters:\n- name: c\n  cluster: {server: \"https://h:1\"}\nusers:\n- name: u\n  user: {client-certificate-data: QUJD}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
         "without a key"),
    ])
    func badInput(text: String, expected: String) throws {
        let path = try write("bad-\(UUID().uuidString)", text)
        let error = #expect(throws: KubeConfigError.self) { try KubeConfigLoader.load(kubeconfig: path) }
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        #expect(error?.message.contains(path) == true, "the message must name the file")
        #expect(error?.message.contains("\n") == false)
    }

    @Test("an HTTP or SOCKS proxy is taken from proxy-url")
    func proxy() throws {
        let path = try write("proxy", """
            clusters:
            - name: c
              cluster: {server: "https://h:6443", proxy-url: "http://proxy.internal:3128"}
            contexts:
            - name: x
              context: {cluster: c}
            current-context: x
            """)
        #expect(try KubeConfigLoader.load(kubeconfig: path).proxyURL == "http://proxy.internal:3128")
    }

    @Test("no configuration at all says what to do")
    func nothingConfigured() {
        let error = #expect(throws: KubeConfigError.self) {
            try KubeConfigLoader.load(environment: ["HOME": directory.path])
        }
        #expect(error?.message.contains("kubebridge demo") == true)
        let missing = #expect(throws: KubeConfigError.self) { try KubeConfigLoader.load(kubeconfig: "/nonexistent/kubeconfig") }
        #expect(missing?.message.contains("/nonexistent/kubeconfig does not exist") == true)
    }

    @Test("in a pod: the service's address, the mounted CA, the rotating token file, the namespace")
    func inCluster() throws {
        _ = try write("token", "sa-token\n")
        _ = try write("ca.crt", "PEM")
        _ = try write("namespace", "kube-bridge")
        let configuration = try KubeConfigLoader.load(
            environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"], serviceAccountDirectory: directory.path)
        #expect(configuration.server == "https://[fd00::1]:443")
        #expect(configuration.namespace == "kube-bridge")
        #expect(configuration.certificateAuthorityPEM == Array("PEM".utf8))
        guard case .tokenFile(let path) = configuration.credentials else { Issue.record("expected a token file"); return }
        #expect(path.hasSuffix("/token"))
    }
}

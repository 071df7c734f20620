import Foundation
import Yams

/// A configuration problem, worded for the person who has to fix it: which file, which field, what to do.
public struct KubeConfigError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// How the client proves who it is.
public enum CredentialSource: Sendable {
    case none
    case token(String)
    /// Read again periodically and after a 401, because projected service-account tokens rotate.
    case tokenFile(String)
    case basic(username: String, password: String)
    case exec(ExecCredentialPlugin)
}

/// An `exec` credential plugin (client.authentication.k8s.io ExecCredential).
public struct ExecCredentialPlugin: Sendable {
    public var command: String
    public var args: [String]
    public var env: [(name: String, value: String)]
    public var apiVersion: String
    public var installHint: String?
    public var provideClusterInfo: Bool
    /// Where relative commands are looked up: the kubeconfig's folder.
    public var baseDirectory: String

    public init(command: String, args: [String] = [], env: [(name: String, value: String)] = [], apiVersion: String = "client.authentication.k8s.io/v1",
                installHint: String? = nil, provideClusterInfo: Bool = false, baseDirectory: String = ".") {
        self.command = command
        self.args = args
        self.env = env
        self.apiVersion = apiVersion
        self.installHint = installHint
        self.provideClusterInfo = provideClusterInfo
        self.baseDirectory = baseDirectory
    }
}

/// Everything needed to reach one cluster as one user.
public struct KubeClientConfiguration: Sendable {
    /// `https://host:port`, without a trailing slash.
    public var server: String
    public var certificateAuthorityPEM: [UInt8]?
    /// Where the CA came from, for error messages.
    public var certificateAuthoritySource: String?
    public var clientCertificatePEM: [UInt8]?
    public var clientKeyPEM: [UInt8]?
    public var clientCertificateSource: String?
    public var insecureSkipTLSVerify = false
    /// `http://host:port` (CONNECT) or `socks5://host:port`, from the kubeconfig's `proxy-url`.
    public var proxyURL: String?
    public var credentials: CredentialSource = .none
    public var namespace: String?
    /// Where this configuration came from: `context "kind" in /root/.kube/config`.
    public var origin: String
    public var userAgent = "kubebridge/0.1"
    /// Deadline of ordinary requests (discovery, list pages, writes).
    public var requestTimeout: Duration = .seconds(60)
    /// A watch that sends no byte for this long is considered dead by the HTTP client.
    public var idleReadTimeout: Duration = .seconds(300)
    public var connectTimeout: Duration = .seconds(10)
    /// Longest watch line accepted; kube-apiserver stores objects up to about 1.5 MiB.
    public var maxWatchLineBytes = 16 * 1024 * 1024
    /// Largest non-watch body accepted (a list page).
    public var maxResponseBytes = 512 * 1024 * 1024
    /// HTTP/1.1 connections per server: each open watch holds one.
    public var maxConnections = 1024

    public init(server: String, origin: String) {
        self.server = server
        self.origin = origin
    }
}

/// Finds and reads cluster configuration the way kubectl and client-go do.
public enum KubeConfigLoader {
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// Resolution order: an explicit file, then `$KUBECONFIG` (a `:`-separated list, merged), then the
    /// in-cluster service account when running in a pod, then `~/.kube/config`.
    public static func load(
        kubeconfig explicitPath: String? = nil, context: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        serviceAccountDirectory: String = KubeConfigLoader.serviceAccountDirectory
    ) throws -> KubeClientConfiguration {
        if let explicitPath {
            guard FileManager.default.fileExists(atPath: explicitPath) else {
                throw KubeConfigError("kubeconfig \(explicitPath) does not exist; pass the path of an existing kubeconfig file")
            }
            return try fromFiles([explicitPath], context: context)
        }
        if let list = environment["KUBECONFIG"], !list.isEmpty {
            let paths = list.split(separator: ":").map(String.init).filter { !$0.isEmpty }
            let existing = paths.filter { FileManager.default.fileExists(atPath: $0) }
            guard !existing.isEmpty else {
                throw KubeConfigError("none of the files in KUBECONFIG exist (\(paths.joined(separator: ", "))); fix KUBECONFIG or unset it")
            }
            return try fromFiles(existing, context: context)
        }
        if environment["KUBERNETES_SERVICE_HOST"] != nil, context == nil {
            return try inCluster(environment: environment, directory: serviceAccountDirectory)
        }
        let home = environment["HOME"] ?? NSHomeDirectory()
        let defaultPath = "\(home)/.kube/config"
        if FileManager.default.fileExists(atPath: defaultPath) {
            return try fromFiles([defaultPath], context: context)
        }
        throw KubeConfigError(
            "no cluster configured: \(defaultPath) does not exist, KUBECONFIG is not set and this is not a pod; pass --kubeconfig FILE, set KUBECONFIG, or try `kubebridge demo`")
    }

    /// The in-cluster configuration of a pod: the service's address from the environment, the
    /// mounted CA, and the service-account token file (re-read, since projected tokens rotate).
    public static func inCluster(environment: [String: String], directory: String = serviceAccountDirectory) throws -> KubeClientConfiguration {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
              let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty
        else {
            throw KubeConfigError("in-cluster configuration needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, which Kubernetes sets in every pod")
        }
        let tokenPath = "\(directory)/token"
        guard FileManager.default.isReadableFile(atPath: tokenPath) else {
            throw KubeConfigError("in-cluster token \(tokenPath) is not readable; is automountServiceAccountToken disabled for this pod?")
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        var configuration = KubeClientConfiguration(server: "https://\(hostPart):\(port)", origin: "in-cluster service account (\(directory))")
        let caPath = "\(directory)/ca.crt"
        guard let ca = FileManager.default.contents(atPath: caPath) else {
            throw KubeConfigError("in-cluster CA \(caPath) is not readable")
        }
        configuration.certificateAuthorityPEM = Array(ca)
        configuration.certificateAuthoritySource = caPath
        configuration.credentials = .tokenFile(tokenPath)
        if let namespace = try? String(contentsOfFile: "\(directory)/namespace", encoding: .utf8) {
            configuration.namespace = namespace.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return configuration
    }

    // MARK: Files

    struct File: Decodable {
        var clusters: [Named<Cluster>]?
        var users: [NamedUser]?
        var contexts: [Named<Context>]?
        var currentContext: String?

        enum CodingKeys: String, CodingKey {
            case clusters, users, contexts
            case currentContext = "current-context"
        }
    }

    struct Named<Value: Decodable>: Decodable {
        var name: String
        var value: Value

        enum CodingKeys: String, CodingKey { case name, cluster, context }

        init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decode(String.self, forKey: .name)
            if let cluster = try container.decodeIfPresent(Value.self, forKey: .cluster) {
                value = cluster
            } else {
                value = try container.decode(Value.self, forKey: .context)
            }
        }
    }

    struct NamedUser: Decodable {
        var name: String
        var user: User
    }

    struct Cluster: Decodable {
        var server: String?
        var certificateAuthority: String?
        var certificateAuthorityData: String?
        var insecureSkipTLSVerify: Bool?
        var tlsServerName: String?
        var proxyURL: String?

        enum CodingKeys: String, CodingKey {
            case server
            case certificateAuthority = "certificate-authority"
            case certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
            case tlsServerName = "tls-server-name"
            case proxyURL = "proxy-url"
        }
    }

    struct User: Decodable {
        var token: String?
        var tokenFile: String?
        var clientCertificate: String?
        var clientCertificateData: String?
        var clientKey: String?
        var clientKeyData: String?
        var username: String?
        var password: String?
        var exec: Exec?
        var authProvider: AuthProvider?

        enum CodingKeys: String, CodingKey {
            case token, tokenFile, username, password, exec
            case clientCertificate = "client-certificate"
            case clientCertificateData = "client-certificate-data"
            case clientKey = "client-key"
            case clientKeyData = "client-key-data"
            case authProvider = "auth-provider"
        }
    }

    struct AuthProvider: Decodable {
        var name: String?
    }

    struct Exec: Decodable {
        struct Variable: Decodable {
            var name: String
            var value: String
        }

        var command: String?
        var args: [String]?
        var env: [Variable]?
        var apiVersion: String?
        var installHint: String?
        var provideClusterInfo: Bool?
    }

    struct Context: Decodable {
        var cluster: String?
        var user: String?
        var namespace: String?
    }

    /// An entry with the file it came from: relative paths in it are relative to that file.
    struct Sourced<Value> {
        var value: Value
        var file: String
        var directory: String { (file as NSString).deletingLastPathComponent }
    }

    static func parse(_ path: String) throws -> File {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KubeConfigError("kubeconfig \(path) is not readable; check its permissions")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw KubeConfigError("kubeconfig \(path) is not UTF-8 text")
        }
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return File() }
        do {
            return try YAMLDecoder().decode(File.self, from: text)
        } catch let error as YamlError {
            throw KubeConfigError("kubeconfig \(path) is not valid YAML: \(String(describing: error).split(separator: "\n").first ?? "")")
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
            let detail = context.underlyingError.map { String(describing: $0) } ?? context.debugDescription
            throw KubeConfigError("kubeconfig \(path) is not valid YAML: \(detail.split(separator: "\n").first ?? "")")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                let DecodingError.dataCorrupted(context) {
            throw KubeConfigError("kubeconfig \(path): field \(fieldPath(context.codingPath)) is invalid: \(context.debugDescription)")
        } catch let DecodingError.keyNotFound(key, context) {
            throw KubeConfigError("kubeconfig \(path): \(fieldPath(context.codingPath)) is missing its \(key.stringValue)")
        } catch {
            throw KubeConfigError("kubeconfig \(path) could not be read: \(error)")
        }
    }

    static func fieldPath(_ path: [CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }

    /// kubectl's merge: the first file to define a name wins, and the first current-context wins.
    static func fromFiles(_ paths: [String], context requestedContext: String?) throws -> KubeClientConfiguration {
        var clusters: [String: Sourced<Cluster>] = [:]
        var users: [String: Sourced<User>] = [:]
        var contexts: [String: Sourced<Context>] = [:]
        var currentContext: String?
        for path in paths {
            let file = try parse(path)
            for entry in file.clusters ?? [] where clusters[entry.name] == nil { clusters[entry.name] = Sourced(value: entry.value, file: path) }
            for entry in file.users ?? [] where users[entry.name] == nil { users[entry.name] = Sourced(value: entry.user, file: path) }
            for entry in file.contexts ?? [] where contexts[entry.name] == nil { contexts[entry.name] = Sourced(value: entry.value, file: path) }
            if currentContext == nil, let current = file.currentContext, !current.isEmpty { currentContext = current }
        }
        let files = paths.joined(separator: ":")
        let available = contexts.keys.sorted().joined(separator: ", ")
        guard let contextName = requestedContext ?? currentContext else {
            throw KubeConfigError("kubeconfig \(files) has no current-context; pass --context with one of: \(available.isEmpty ? "(none defined)" : available)")
        }
        guard let context = contexts[contextName] else {
            throw KubeConfigError("context \"\(contextName)\" not found in kubeconfig \(files); available: \(available.isEmpty ? "(none)" : available)")
        }
        guard let clusterName = context.value.cluster, let cluster = clusters[clusterName] else {
            throw KubeConfigError("context \"\(contextName)\" in \(context.file) names cluster \"\(context.value.cluster ?? "")\", which is not defined in \(files)")
        }
        guard let server = cluster.value.server, !server.isEmpty else {
            throw KubeConfigError("cluster \"\(clusterName)\" in \(cluster.file) has no server; set clusters[].cluster.server to https://HOST:PORT")
        }
        guard let url = URL(string: server), let scheme = url.scheme, ["https", "http"].contains(scheme), url.host != nil else {
            throw KubeConfigError("cluster \"\(clusterName)\" in \(cluster.file): server \"\(server)\" is not an https:// URL")
        }
        var configuration = KubeClientConfiguration(
            server: server.hasSuffix("/") ? String(server.dropLast()) : server,
            origin: "context \"\(contextName)\" in \(context.file)")
        configuration.namespace = context.value.namespace
        configuration.insecureSkipTLSVerify = cluster.value.insecureSkipTLSVerify ?? false
        if cluster.value.tlsServerName != nil {
            throw KubeConfigError("cluster \"\(clusterName)\" in \(cluster.file): tls-server-name is not supported; point server at a name the certificate covers")
        }
        if let caData = cluster.value.certificateAuthorityData, !caData.isEmpty {
            configuration.certificateAuthorityPEM = try decodeBase64(caData, field: "certificate-authority-data of cluster \"\(clusterName)\"", file: cluster.file)
            configuration.certificateAuthoritySource = "certificate-authority-data of cluster \"\(clusterName)\" in \(cluster.file)"
        } else if let caPath = cluster.value.certificateAuthority, !caPath.isEmpty {
            let resolved = resolve(caPath, relativeTo: cluster.directory)
            guard let data = FileManager.default.contents(atPath: resolved) else {
                throw KubeConfigError("certificate-authority \(resolved) of cluster \"\(clusterName)\" in \(cluster.file) is not readable")
            }
            configuration.certificateAuthorityPEM = Array(data)
            configuration.certificateAuthoritySource = "certificate-authority \(resolved) of cluster \"\(clusterName)\""
        }
        if scheme == "http" {
            configuration.certificateAuthorityPEM = nil
        }
        if let proxy = cluster.value.proxyURL, !proxy.isEmpty {
            guard let proxyURL = URL(string: proxy), let proxyScheme = proxyURL.scheme, ["http", "socks5"].contains(proxyScheme),
                  proxyURL.host != nil
            else {
                throw KubeConfigError("cluster \"\(clusterName)\" in \(cluster.file): proxy-url \"\(proxy)\" must be http://HOST:PORT or socks5://HOST:PORT")
            }
            configuration.proxyURL = proxy
        }
        guard let userName = context.value.user else {
            return configuration
        }
        guard let user = users[userName] else {
            throw KubeConfigError("context \"\(contextName)\" in \(context.file) names user \"\(userName)\", which is not defined in \(files)")
        }
        let where_ = "user \"\(userName)\" in \(user.file)"
        if let certData = user.value.clientCertificateData, !certData.isEmpty {
            configuration.clientCertificatePEM = try decodeBase64(certData, field: "client-certificate-data of user \"\(userName)\"", file: user.file)
            configuration.clientCertificateSource = "client-certificate-data of \(where_)"
        } else if let certPath = user.value.clientCertificate, !certPath.isEmpty {
            let resolved = resolve(certPath, relativeTo: user.directory)
            guard let data = FileManager.default.contents(atPath: resolved) else {
                throw KubeConfigError("client-certificate \(resolved) of \(where_) is not readable")
            }
            configuration.clientCertificatePEM = Array(data)
            configuration.clientCertificateSource = "client-certificate \(resolved)"
        }
        if let keyData = user.value.clientKeyData, !keyData.isEmpty {
            configuration.clientKeyPEM = try decodeBase64(keyData, field: "client-key-data of user \"\(userName)\"", file: user.file)
        } else if let keyPath = user.value.clientKey, !keyPath.isEmpty {
            let resolved = resolve(keyPath, relativeTo: user.directory)
            guard let data = FileManager.default.contents(atPath: resolved) else {
                throw KubeConfigError("client-key \(resolved) of \(where_) is not readable")
            }
            configuration.clientKeyPEM = Array(data)
        }
        if (configuration.clientCertificatePEM == nil) != (configuration.clientKeyPEM == nil) {
            throw KubeConfigError("\(where_) has a client certificate without a key or a key without a certificate; set both client-certificate(-data) and client-key(-data)")
        }
        if let token = user.value.token, !token.isEmpty {
            configuration.credentials = .token(token)
        } else if let tokenFile = user.value.tokenFile, !tokenFile.isEmpty {
            let resolved = resolve(tokenFile, relativeTo: user.directory)
            guard FileManager.default.isReadableFile(atPath: resolved) else {
                throw KubeConfigError("tokenFile \(resolved) of \(where_) is not readable")
            }
            configuration.credentials = .tokenFile(resolved)
        } else if let exec = user.value.exec {
            guard let command = exec.command, !command.isEmpty else {
                throw KubeConfigError("exec plugin of \(where_) has no command")
            }
            let apiVersion = exec.apiVersion ?? ""
            guard ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"].contains(apiVersion) else {
                throw KubeConfigError("exec plugin of \(where_) has apiVersion \"\(apiVersion)\"; kubebridge speaks client.authentication.k8s.io/v1 and v1beta1")
            }
            configuration.credentials = .exec(ExecCredentialPlugin(
                command: command, args: exec.args ?? [], env: (exec.env ?? []).map { ($0.name, $0.value) }, apiVersion: apiVersion,
                installHint: exec.installHint, provideClusterInfo: exec.provideClusterInfo ?? false, baseDirectory: user.directory))
        } else if let username = user.value.username, let password = user.value.password {
            configuration.credentials = .basic(username: username, password: password)
        } else if let provider = user.value.authProvider {
            throw KubeConfigError("\(where_) uses auth-provider \"\(provider.name ?? "")\", which Kubernetes removed; switch the kubeconfig to an exec credential plugin")
        }
        return configuration
    }

    static func resolve(_ path: String, relativeTo directory: String) -> String {
        if path.hasPrefix("/") { return path }
        if path.hasPrefix("~/") { return NSHomeDirectory() + path.dropFirst() }
        return directory.isEmpty ? path : "\(directory)/\(path)"
    }

    static func decodeBase64(_ text: String, field: String, file: String) throws -> [UInt8] {
        let cleaned = text.filter { !$0.isWhitespace }
        guard let data = Data(base64Encoded: cleaned) else {
            throw KubeConfigError("\(field) in \(file) is not valid base64; it must hold the base64 of a PEM file (base64 -w0 FILE)")
        }
        return Array(data)
    }
}

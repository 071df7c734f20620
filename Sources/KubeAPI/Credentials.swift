import Foundation
import KubeModel
import NIOCore
import NIOPosix

/// Produces the Authorization header, caching what is costly to get (exec plugins) until it
/// expires or the server answers 401.
actor CredentialProvider {
    private let source: CredentialSource
    private let server: String
    private let caPEM: [UInt8]?
    private var cached: (header: String, expires: Date?)?
    private var inFlight: Task<(header: String, expires: Date?), Error>?

    /// Token files are read again after this long, as client-go does for projected service-account tokens.
    static let tokenFileRefresh: TimeInterval = 60

    init(source: CredentialSource, server: String, caPEM: [UInt8]?) {
        self.source = source
        self.server = server
        self.caPEM = caPEM
    }

    /// Whether a 401 can be cured by fetching credentials again.
    nonisolated var canRefresh: Bool {
        switch source {
        case .tokenFile, .exec: return true
        default: return false
        }
    }

    func authorization() async throws -> String? {
        switch source {
        case .none:
            return nil
        case .token(let token):
            return "Bearer \(token)"
        case .basic(let username, let password):
            return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
        case .tokenFile, .exec:
            if let cached, cached.expires.map({ $0 > Date() }) ?? true {
                return cached.header
            }
            if let inFlight { return try await inFlight.value.header }
            let task = Task { try await self.fetch() }
            inFlight = task
            defer { inFlight = nil }
            let fresh = try await task.value
            cached = fresh
            return fresh.header
        }
    }

    func invalidate() {
        cached = nil
    }

    private func fetch() async throws -> (header: String, expires: Date?) {
        switch source {
        case .tokenFile(let path):
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw KubeAPIError(code: .credentials, message: "token file \(path) is not readable: \(error.localizedDescription)", request: "read token")
            }
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else {
                throw KubeAPIError(code: .credentials, message: "token file \(path) is empty", request: "read token")
            }
            return ("Bearer \(token)", Date().addingTimeInterval(Self.tokenFileRefresh))
        case .exec(let plugin):
            return try await ExecCredentialRunner.run(plugin, server: server, caPEM: caPEM)
        default:
            return ("", nil)
        }
    }
}

/// Runs an exec credential plugin and reads its ExecCredential.
enum ExecCredentialRunner {
    struct ExecCredential: Decodable {
        struct Status: Decodable {
            var token: String?
            var expirationTimestamp: String?
            var clientCertificateData: String?
            var clientKeyData: String?
        }

        var apiVersion: String?
        var kind: String?
        var status: Status?
    }

    static let timeout: TimeInterval = 60

    static func run(_ plugin: ExecCredentialPlugin, server: String, caPEM: [UInt8]?) async throws -> (header: String, expires: Date?) {
        let request = "exec credential plugin \(plugin.command)"
        var execInfo: [String: Any] = [
            "apiVersion": plugin.apiVersion, "kind": "ExecCredential", "spec": ["interactive": false],
        ]
        if plugin.provideClusterInfo {
            var cluster: [String: Any] = ["server": server]
            if let caPEM { cluster["certificate-authority-data"] = Data(caPEM).base64EncodedString() }
            execInfo["spec"] = ["interactive": false, "cluster": cluster]
        }
        let info = String(decoding: try JSONSerialization.data(withJSONObject: execInfo, options: [.sortedKeys]), as: UTF8.self)
        var environment = ProcessInfo.processInfo.environment
        for variable in plugin.env { environment[variable.name] = variable.value }
        environment["KUBERNETES_EXEC_INFO"] = info

        let executable: String
        if plugin.command.contains("/") {
            executable = KubeConfigLoader.resolve(plugin.command, relativeTo: plugin.baseDirectory)
        } else if let found = findInPath(plugin.command, path: environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin") {
            executable = found
        } else {
            let hint = plugin.installHint.map { " \($0)" } ?? ""
            throw KubeAPIError(code: .credentials, message: "command \"\(plugin.command)\" not found in PATH.\(hint)", request: request)
        }
        let result: ProcessRunner.Result
        do {
            result = try await ProcessRunner.run(executable, arguments: plugin.args, environment: environment, timeout: timeout)
        } catch {
            throw KubeAPIError(code: .credentials, message: "could not start \(executable): \(error.localizedDescription)", request: request)
        }
        let (status, stdout, stderr) = (result.status, result.stdout, result.stderr)
        guard status == 0 else {
            let detail = String(decoding: stderr.prefix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw KubeAPIError(code: .credentials, message: "exited with status \(status)\(detail.isEmpty ? "" : ": \(detail)")", request: request)
        }
        let credential: ExecCredential
        do {
            credential = try JSONDecoder().decode(ExecCredential.self, from: Data(stdout))
        } catch {
            throw KubeAPIError(code: .credentials, message: "printed something that is not an ExecCredential: \(error)", request: request)
        }
        guard credential.kind == "ExecCredential", credential.apiVersion == plugin.apiVersion else {
            throw KubeAPIError(code: .credentials, message: "printed kind \(credential.kind ?? "?") apiVersion \(credential.apiVersion ?? "?"); expected ExecCredential \(plugin.apiVersion)", request: request)
        }
        guard let token = credential.status?.token, !token.isEmpty else {
            if credential.status?.clientCertificateData != nil {
                throw KubeAPIError(code: .credentials, message: "returned a client certificate; kubebridge accepts tokens from exec plugins", request: request)
            }
            throw KubeAPIError(code: .credentials, message: "returned no token", request: request)
        }
        var expires: Date?
        if let stamp = credential.status?.expirationTimestamp {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            expires = formatter.date(from: stamp) ?? ISO8601DateFormatter().date(from: stamp)
            guard expires != nil else {
                throw KubeAPIError(code: .credentials, message: "expirationTimestamp \"\(stamp)\" is not RFC 3339", request: request)
            }
        }
        return ("Bearer \(token)", expires)
    }

    static func findInPath(_ command: String, path: String) -> String? {
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(command)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

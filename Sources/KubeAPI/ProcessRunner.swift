import Foundation

/// Runs a program to completion and captures its output. Waiting holds no thread of Swift's
/// cooperative pool or of NIO's blocking pool: the pipes are drained on Dispatch threads and the
/// exit arrives through the termination handler, so a slow program delays only its caller.
package enum ProcessRunner {
    package struct Result: Sendable {
        package var status: Int32
        package var stdout: [UInt8]
        package var stderr: [UInt8]
    }

    /// Runs `executable`; it is killed when it runs longer than `timeout`.
    package static func run(_ executable: String, arguments: [String], environment: [String: String], timeout: TimeInterval) async throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        let (exits, exited) = AsyncStream<Int32>.makeStream(bufferingPolicy: .bufferingNewest(1))
        process.terminationHandler = { process in
            exited.yield(process.terminationStatus)
            exited.finish()
        }
        try process.run()
        // SIGKILL, as client-go does for exec plugins: a child started from a pool thread inherits
        // that thread's blocked signal mask, so SIGTERM could stay pending forever.
        let killer = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        defer { killer.cancel() }
        // Both pipes are drained at once, so a program that fills one cannot block on it.
        async let out = readToEnd(stdout.fileHandleForReading)
        async let err = readToEnd(stderr.fileHandleForReading)
        var status: Int32 = -1
        for await code in exits { status = code }
        return Result(status: status, stdout: Array(await out), stderr: Array(await err))
    }

    private static func readToEnd(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: handle.readDataToEndOfFile()) }
        }
    }
}

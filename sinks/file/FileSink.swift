import BridgeCore
import Foundation
import NIOCore
import Synchronization

/// Writes events as JSON lines in the CloudEvents structured format, one event per line. An event
/// is acknowledged only after its line is written and the file fsynced. Files rotate by size.
public final class FileSink: Sink {
    public struct Options: Sendable {
        /// The file path; `{group}`, `{version}`, `{resource}`, `{namespace}` and `{name}` are replaced
        /// per event (`core` for the core group, `_cluster` for cluster-scoped objects).
        public var path: String
        /// A file that reaches this size is renamed to `<path>.1` (older ones shift to `.2`, ...).
        public var maxFileBytes = 256 * 1024 * 1024
        /// Rotated files kept; older ones are removed.
        public var keepFiles = 5
        /// Each event carries its merge patch (`mergepatch`), when there is one.
        public var mergePatch = false

        public init(path: String) {
            self.path = path
        }
    }

    public let name: String
    public let options: Options
    private let files = Mutex<[String: DurableAppender]>([:])

    /// `options.path` as a template; nil when it has no placeholder.
    private let pathTemplate: DestinationTemplate?

    public init(name: String = "file", options: Options) {
        self.name = name
        self.options = options
        pathTemplate = options.path.contains("{") ? DestinationTemplate(options.path) : nil
    }

    /// The file of an event.
    func path(for event: OutboundEvent) -> String {
        guard let pathTemplate else { return options.path }
        return pathTemplate.render(event, clusterScoped: "_cluster")
    }

    public func deliver(_ batch: [OutboundEvent]) async -> [DeliveryOutcome] {
        var byFile: [String: [Int]] = [:]
        for (index, event) in batch.enumerated() { byFile[path(for: event), default: []].append(index) }
        var outcomes = [DeliveryOutcome](repeating: .delivered, count: batch.count)
        for (path, indices) in byFile {
            do {
                let file = try appender(for: path)
                let lines: [ByteBuffer] = indices.map { index in
                    var line = batch[index].envelope.structured(patch: options.mergePatch)
                    line.writeStaticString("\n")
                    return line
                }
                try await file.append(lines)
                if file.size >= options.maxFileBytes { try rotate(path) }
            } catch let error as FileWriteError {
                let outcome: DeliveryOutcome = [ENOSPC, EDQUOT, EROFS, EACCES, EPERM, ENOENT].contains(error.errno)
                    ? .fatal(error.description) : .retriable(error.description)
                for index in indices { outcomes[index] = outcome }
            } catch {
                for index in indices { outcomes[index] = .retriable("\(error)") }
            }
        }
        return outcomes
    }

    private func appender(for path: String) throws -> DurableAppender {
        try files.withLock { files in
            if let file = files[path] { return file }
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            let file = try DurableAppender(path: path)
            files[path] = file
            return file
        }
    }

    /// Renames the full file away; the next event opens a new one.
    private func rotate(_ path: String) throws {
        try files.withLock { files in
            files[path] = nil
            let manager = FileManager.default
            try? manager.removeItem(atPath: "\(path).\(options.keepFiles)")
            for generation in stride(from: options.keepFiles - 1, through: 1, by: -1) where manager.fileExists(atPath: "\(path).\(generation)") {
                try manager.moveItem(atPath: "\(path).\(generation)", toPath: "\(path).\(generation + 1)")
            }
            try manager.moveItem(atPath: path, toPath: "\(path).1")
        }
    }

    public func close() async throws {
        let open = files.withLock { files in
            defer { files = [:] }
            return Array(files.values)
        }
        for file in open { try await file.close() }
    }
}

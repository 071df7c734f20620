import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A file error, worded with the path and what it means.
public struct FileWriteError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var operation: String

    public var description: String {
        let meaning: String
        switch errno {
        case ENOSPC: meaning = "the disk is full"
        case EDQUOT: meaning = "the disk quota is exhausted"
        case EROFS: meaning = "the file system is read-only"
        case EACCES, EPERM: meaning = "permission denied"
        case ENOENT: meaning = "the directory does not exist"
        default: meaning = String(cString: strerror(errno))
        }
        return "\(operation) \(path) failed: \(meaning)"
    }
}

/// Appends to a file and makes the bytes durable: `append` returns only after fsync, so whatever
/// is acknowledged after it survives a crash or a power cut. Blocking calls run on NIO's pool.
public final class DurableAppender: Sendable {
    public let path: String
    private let descriptor: Mutex<Int32>

    /// Opens `path` for appending. With `lines`, a last line left unfinished by a crash is cut
    /// off: it was never acknowledged, it will be sent again, and appending after it would merge
    /// two events into one broken line.
    public init(path: String, lines: Bool = true) throws {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileWriteError(path: path, errno: errno, operation: "opening") }
        descriptor = Mutex(fd)
        if lines { try Self.cutUnfinishedLine(fd, path: path) }
        // A new file's directory entry must be durable too.
        let directory = (path as NSString).deletingLastPathComponent
        let dirfd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            Glibc.close(dirfd)
        }
    }

    private static func cutUnfinishedLine(_ fd: Int32, path: String) throws {
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size > 0, (info.st_mode & S_IFMT) == S_IFREG else { return }
        var end = info.st_size
        var byte: UInt8 = 0
        guard pread(fd, &byte, 1, end - 1) == 1, byte != 0x0A else { return }
        // Walk back to the last newline, in blocks.
        var block = [UInt8](repeating: 0, count: 64 * 1024)
        while end > 0 {
            let start = max(0, end - off_t(block.count))
            let count = Int(end - start)
            guard pread(fd, &block, count, start) == count else { break }
            if let newline = block[0..<count].lastIndex(of: 0x0A) {
                end = start + off_t(newline) + 1
                break
            }
            end = start
        }
        guard ftruncate(fd, end) == 0 else { throw FileWriteError(path: path, errno: errno, operation: "repairing") }
        fsync(fd)
    }

    /// Bytes in the file now.
    public var size: Int {
        descriptor.withLock { fd in
            var info = stat()
            return fstat(fd, &info) == 0 ? Int(info.st_size) : 0
        }
    }

    /// Writes the buffers in order and fsyncs. On failure the file is cut back to where it was, so
    /// that no half-written line stays behind for readers.
    public func append(_ buffers: [ByteBuffer]) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            try self.descriptor.withLock { fd in
                var info = stat()
                let before = fstat(fd, &info) == 0 ? info.st_size : -1
                do {
                    try self.writeAndSync(buffers, to: fd)
                } catch {
                    if before >= 0 { _ = ftruncate(fd, before) }
                    throw error
                }
            }
        }
    }

    private func writeAndSync(_ buffers: [ByteBuffer], to fd: Int32) throws {
        for buffer in buffers {
            try buffer.withUnsafeReadableBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw FileWriteError(path: path, errno: errno, operation: "writing")
                    }
                    offset += written
                }
            }
        }
        guard fsync(fd) == 0 else { throw FileWriteError(path: path, errno: errno, operation: "syncing") }
    }

    public func close() async throws {
        descriptor.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    deinit {
        descriptor.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
        }
    }
}

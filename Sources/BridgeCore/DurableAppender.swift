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

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileWriteError(path: path, errno: errno, operation: "opening") }
        descriptor = Mutex(fd)
        // A new file's directory entry must be durable too.
        let directory = (path as NSString).deletingLastPathComponent
        let dirfd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            Glibc.close(dirfd)
        }
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

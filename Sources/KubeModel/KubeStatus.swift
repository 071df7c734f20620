import Foundation
import NIOCore
import NIOFoundationCompat

/// A `Status` object, the body of every API error and of watch ERROR events.
public struct KubeStatus: Sendable, Hashable, Decodable, Error {
    public struct Cause: Sendable, Hashable, Decodable {
        public var reason: String?
        public var message: String?
        public var field: String?
    }

    public struct Details: Sendable, Hashable, Decodable {
        public var name: String?
        public var group: String?
        public var kind: String?
        public var uid: String?
        public var causes: [Cause]?
        public var retryAfterSeconds: Int?
    }

    public struct ListMeta: Sendable, Hashable, Decodable {
        public var `continue`: String?
    }

    public var kind: String?
    public var status: String?
    public var message: String?
    public var reason: String?
    public var code: Int?
    public var details: Details?
    public var metadata: ListMeta?

    public init(code: Int, reason: String?, message: String?) {
        self.kind = "Status"
        self.status = "Failure"
        self.code = code
        self.reason = reason
        self.message = message
    }

    package static func decode(_ bytes: ByteBuffer) throws -> KubeStatus {
        do {
            return try JSONDecoder().decode(KubeStatus.self, from: bytes)
        } catch {
            throw JSONScanError(offset: 0, reason: "not a Status object: \(error)")
        }
    }

    package static func decodeIfStatus(_ bytes: ByteBuffer) -> KubeStatus? {
        guard let status = try? JSONDecoder().decode(KubeStatus.self, from: bytes), status.kind == "Status" else { return nil }
        return status
    }
}

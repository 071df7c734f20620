import Foundation
import KubeModel
import NIOCore
import NIOFoundationCompat

/// A failure talking to the API server, typed so that callers can tell a retry from a relist from giving up.
public struct KubeAPIError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: Hashable, Sendable {
            case apiStatus, unexpectedResponse, transport, tlsVerification, malformedResponse, lineTooLong
            case truncatedStream, responseTooLarge, credentials, timeout
        }

        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// The server answered with an error Status.
        public static let apiStatus = Code(.apiStatus)
        /// The server answered with an error that is not a Status (a proxy's HTML, a plain-text 404).
        public static let unexpectedResponse = Code(.unexpectedResponse)
        /// The connection failed: refused, reset, closed early, name not resolved.
        public static let transport = Code(.transport)
        /// The server's certificate did not verify against the configured CA.
        public static let tlsVerification = Code(.tlsVerification)
        /// The body was not the JSON it should be.
        public static let malformedResponse = Code(.malformedResponse)
        /// A watch line was longer than the configured limit.
        public static let lineTooLong = Code(.lineTooLong)
        /// A watch stream ended in the middle of a line.
        public static let truncatedStream = Code(.truncatedStream)
        public static let responseTooLarge = Code(.responseTooLarge)
        /// Credentials could not be obtained (token file, exec plugin).
        public static let credentials = Code(.credentials)
        /// The request's deadline or the read timeout passed.
        public static let timeout = Code(.timeout)

        public var description: String { "\(backing)" }
    }

    /// What the caller should do about it.
    public enum Recovery: Sendable, Equatable {
        /// Try again later; after the given time when the server said so.
        case retry(after: Duration?)
        /// The resourceVersion is gone: list again.
        case relist
        case giveUp
    }

    public var code: Code
    /// The HTTP status, when there was an answer.
    public var httpStatus: Int?
    public var status: KubeStatus?
    public var retryAfter: Duration?
    public var message: String
    /// What was being done: `GET https://…/api/v1/configmaps` or `watch core/v1/configmaps`.
    public var request: String

    public init(code: Code, httpStatus: Int? = nil, status: KubeStatus? = nil, retryAfter: Duration? = nil, message: String, request: String) {
        self.code = code
        self.httpStatus = httpStatus
        self.status = status
        self.retryAfter = retryAfter
        self.message = message
        self.request = request
    }

    public var reason: String? { status?.reason }

    public var isGone: Bool { httpStatus == 410 || status?.code == 410 || status?.reason == "Expired" || status?.reason == "Gone" }
    public var isForbidden: Bool { httpStatus == 403 || status?.code == 403 }
    public var isUnauthorized: Bool { httpStatus == 401 || status?.code == 401 }
    public var isNotFound: Bool { httpStatus == 404 }
    public var isTooManyRequests: Bool { httpStatus == 429 || status?.code == 429 }
    public var isConflict: Bool { httpStatus == 409 }

    public var recovery: Recovery {
        if isGone { return .relist }
        switch code {
        case .transport, .truncatedStream, .timeout, .malformedResponse:
            return .retry(after: retryAfter)
        case .apiStatus, .unexpectedResponse:
            let code = httpStatus ?? status?.code ?? 0
            if code == 429 || code >= 500 || status?.reason == "ServerTimeout" || status?.reason == "Timeout" {
                return .retry(after: retryAfter)
            }
            return .giveUp
        default:
            return .giveUp
        }
    }

    public var isRetriable: Bool {
        if case .retry = recovery { return true }
        return false
    }

    public var description: String {
        var text = "\(request): "
        if let httpStatus {
            text += "\(httpStatus)"
            if let reason = status?.reason, !reason.isEmpty { text += " \(reason)" }
            text += ": "
        }
        text += message
        if let retryAfter { text += " (retry after \(retryAfter.spoken))" }
        return text
    }

    /// The error for an answer that is not 2xx: the Status when the body is one, else the body's start.
    static func fromResponse(httpStatus: Int, headers: [(String, String)], body: ByteBuffer, request: String) -> KubeAPIError {
        let retryAfterHeader = headers.first { $0.0.lowercased() == "retry-after" }.flatMap { Int($0.1.trimmingCharacters(in: .whitespaces)) }
        if let status = KubeStatus.decodeIfStatus(body) {
            let seconds = retryAfterHeader ?? status.details?.retryAfterSeconds
            return KubeAPIError(
                code: .apiStatus, httpStatus: httpStatus, status: status, retryAfter: seconds.map { .seconds($0) },
                message: status.message ?? status.reason ?? "request failed", request: request)
        }
        let text = String(buffer: body.getSlice(at: body.readerIndex, length: min(200, body.readableBytes)) ?? ByteBuffer())
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let contentType = headers.first { $0.0.lowercased() == "content-type" }?.1 ?? "no content type"
        return KubeAPIError(
            code: .unexpectedResponse, httpStatus: httpStatus, retryAfter: retryAfterHeader.map { .seconds($0) },
            message: text.isEmpty ? "empty \(contentType) body" : "\(contentType) body: \(text)", request: request)
    }
}

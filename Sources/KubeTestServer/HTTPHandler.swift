import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// One HTTP/1.1 connection or one HTTP/2 stream: requests in, kube-apiserver answers out, with Go
/// net/http's header order. Over HTTP/2 the names go out in lower case and there is no
/// `Transfer-Encoding` or `Connection`, as the transcripts' README says of the real server.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let maxBodyBytes = 3 * 1024 * 1024 + 512 * 1024

    private let state: APIServerState
    private let http2: Bool
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var session: WatchSession?
    private var tlsUser: String?
    private var tlsUserResolved = false

    /// `tlsUser`: the client certificate's user, when the connection already knows it (HTTP/2).
    init(state: APIServerState, http2: Bool, tlsUser: String? = nil) {
        self.state = state
        self.http2 = http2
        self.tlsUser = tlsUser
        self.tlsUserResolved = tlsUser != nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(var buffer):
            if body.count + buffer.readableBytes > Self.maxBodyBytes {
                respond(context: context, .status(413, reason: "RequestEntityTooLarge", message: "Request entity too large: limit is 3145728"), keepAlive: false)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else { return }
            self.head = nil
            dispatch(context: context, head: head)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { session?.pump() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        session?.cancel()
        session = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func resolveTLSUser(context: ChannelHandlerContext) {
        guard !tlsUserResolved else { return }
        tlsUserResolved = true
        if let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
           let certificate = handler.peerCertificate, let der = try? certificate.toDERBytes() {
            tlsUser = TestPKI.commonName(ofDER: der)
        }
    }

    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead) {
        resolveTLSUser(context: context)
        let (path, query) = Self.split(uri: head.uri)
        let request = APIRequest(method: head.method, path: path, query: query, headers: head.headers, body: body, tlsUser: tlsUser)
        body = []
        process(context: context, outcome: state.handle(request), request: request, keepAlive: http2 || head.isKeepAlive)
    }

    private func process(context: ChannelHandlerContext, outcome: Outcome, request: APIRequest, keepAlive: Bool) {
        switch outcome {
        case .respond(let response):
            state.record(request, code: response.code)
            respond(context: context, response, keepAlive: keepAlive)
        case .drop:
            state.record(request, code: 0)
            context.close(promise: nil)
        case .delayed(let amount, let request):
            context.eventLoop.assumeIsolated().scheduleTask(in: amount) { [self] in
                guard context.channel.isActive else { return }
                process(context: context, outcome: state.resume(request), request: request, keepAlive: keepAlive)
            }
        case .held(let request):
            state.held.append { [self] in
                guard context.channel.isActive else { return }
                process(context: context, outcome: state.resume(request), request: request, keepAlive: keepAlive)
            }
        case .watch(let plan):
            state.record(request, code: 200)
            var headers = baseHeaders(contentType: "application/json", cacheControl: "no-cache, private", extra: [], nosniff: false, flowControl: true)
            headers.add(name: "Date", value: ObjectRules.httpDate(state.now))
            if !http2 { headers.add(name: "Transfer-Encoding", value: "chunked") }
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            let session = WatchSession(state: state, plan: plan, context: context) { [weak self] in
                self?.session = nil
                if !keepAlive { context.close(promise: nil) }
            }
            self.session = session
            session.start()
        }
    }

    private func baseHeaders(contentType: String, cacheControl: String, extra: [(String, String)], nosniff: Bool, flowControl: Bool) -> HTTPHeaders {
        var fields: [(String, String)] = [
            ("Audit-Id", UUID().uuidString.lowercased()), ("Cache-Control", cacheControl), ("Content-Type", contentType),
        ]
        fields += extra
        if nosniff { fields.append(("X-Content-Type-Options", "nosniff")) }
        if flowControl {
            let uids = state.flowSchemaUIDs["admin"]!
            fields.append(("X-Kubernetes-Pf-Flowschema-Uid", uids.0))
            fields.append(("X-Kubernetes-Pf-Prioritylevel-Uid", uids.1))
        }
        fields.sort { $0.0 < $1.0 }
        return HTTPHeaders(fields)
    }

    private func respond(context: ChannelHandlerContext, _ response: APIResponse, keepAlive: Bool) {
        var headers = baseHeaders(contentType: response.contentType, cacheControl: response.cacheControl,
                                  extra: response.extraHeaders, nosniff: response.nosniff, flowControl: response.flowControlHeaders)
        headers.add(name: "Date", value: ObjectRules.httpDate(state.now))
        // Go's net/http buffers 2048 bytes: a larger body goes out chunked (over HTTP/2, in DATA
        // frames without a length).
        let chunked = response.body.count > 2048
        if response.code != 304 {
            if chunked {
                if !http2 { headers.add(name: "Transfer-Encoding", value: "chunked") }
            } else {
                headers.add(name: "Content-Length", value: String(response.body.count))
            }
        }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.code)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// Go's url.ParseQuery: `+` is a space, percent escapes decoded.
    static func split(uri: String) -> (String, [String: String]) {
        guard let mark = uri.firstIndex(of: "?") else { return (percentDecode(uri, plusIsSpace: false), [:]) }
        let path = percentDecode(String(uri[..<mark]), plusIsSpace: false)
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = percentDecode(String(parts[0]), plusIsSpace: true)
            if query[key] == nil {
                query[key] = parts.count > 1 ? percentDecode(String(parts[1]), plusIsSpace: true) : ""
            }
        }
        return (path, query)
    }

    static func percentDecode(_ text: String, plusIsSpace: Bool) -> String {
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "%"), i + 2 < bytes.count, let v = UInt8(String(decoding: bytes[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
                continue
            }
            out.append(plusIsSpace && b == UInt8(ascii: "+") ? 0x20 : b)
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension APIServerState {
    func record(_ request: APIRequest, code: Int) {
        let query = request.query.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
        requestLog.append("\(request.method.rawValue) \(request.path)\(query.isEmpty ? "" : "?" + query) \(code)")
        if requestLog.count > 20000 { requestLog.removeFirst(10000) }
    }
}

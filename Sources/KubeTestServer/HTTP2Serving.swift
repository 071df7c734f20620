import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One accepted connection, as the server's controls see it.
final class ServedConnection {
    let channel: Channel
    /// `h2` or `http/1.1`.
    var applicationProtocol = "http/1.1"
    /// Streams open now (HTTP/2), counted as Go's server counts them: from HEADERS until closed.
    var openStreams = 0
    var streamsRefused = 0
    /// The highest stream the client has opened: what a GOAWAY names as the last one served, as
    /// Go's server does, so that the client knows any later stream was not worked on.
    var lastStreamID = HTTP2StreamID(0)
    let streamLimit: Int

    private var goingAway = false

    init(channel: Channel, streamLimit: Int) {
        self.channel = channel
        self.streamLimit = streamLimit
    }

    /// After a GOAWAY the connection ends once its streams have (Go's server closes it a second
    /// after the last one, `goAwayTimeout`).
    func sentGoAway() {
        goingAway = true
        closeIfDone()
    }

    func streamClosed() {
        openStreams -= 1
        closeIfDone()
    }

    private func closeIfDone() {
        guard goingAway, openStreams == 0 else { return }
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }
}

/// kube-apiserver's HTTP/2 as recorded in `Tests/TestSupport/Fixtures/http2`: its SETTINGS, and a
/// stream beyond the advertised concurrent-stream limit reset with PROTOCOL_ERROR while the
/// connection stays up. Go's server does that once its SETTINGS are acknowledged; NIOHTTP2 would
/// instead end the whole connection, so it is told a much larger limit and the advertised one is
/// written into the SETTINGS frame on its way out and enforced per stream here.
enum HTTP2Serving {
    /// What NIOHTTP2 enforces; the wire says `Options.maxConcurrentStreams`.
    static let internalStreamLimit = 1_000_000

    static func settings(streamLimit: Int) -> HTTP2Settings {
        [
            HTTP2Setting(parameter: .maxFrameSize, value: 262_144),
            HTTP2Setting(parameter: .maxConcurrentStreams, value: streamLimit),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 1_048_896),
            HTTP2Setting(parameter: .headerTableSize, value: 4096),
            HTTP2Setting(parameter: .initialWindowSize, value: 262_144),
            // SETTINGS_NO_RFC7540_PRIORITIES
            HTTP2Setting(parameter: HTTP2SettingsParameter(extensionSetting: 9), value: 1),
        ]
    }

    static func configure(_ channel: Channel, connection: ServedConnection, streamInitializer: @escaping @Sendable (Channel) throws -> Void) throws {
        connection.applicationProtocol = "h2"
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(AdvertisedStreamLimit(limit: connection.streamLimit))
        var configuration = NIOHTTP2Handler.ConnectionConfiguration()
        configuration.initialSettings = settings(streamLimit: internalStreamLimit)
        var streamConfiguration = NIOHTTP2Handler.StreamConfiguration()
        streamConfiguration.targetWindowSize = 262_144
        let loopBoundConnection = NIOLoopBound(connection, eventLoop: channel.eventLoop)
        _ = try sync.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: configuration, streamConfiguration: streamConfiguration
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(StreamLimit(connection: loopBoundConnection.value))
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try streamInitializer(stream)
            }
        }
    }
}

/// Writes the advertised SETTINGS_MAX_CONCURRENT_STREAMS into the connection's first SETTINGS
/// frame, then leaves the pipeline.
final class AdvertisedStreamLimit: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var buffer = unwrapOutboundIn(data)
        var rewritten = false
        defer {
            context.write(wrapOutboundOut(buffer), promise: promise)
            if rewritten { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
        }
        let start = buffer.readerIndex
        // A SETTINGS frame without ACK: 9-byte header, then 6-byte entries.
        if let length = buffer.getInteger(at: start, as: UInt32.self).map({ Int($0 >> 8) }),
           buffer.getInteger(at: start + 3, as: UInt8.self) == 4, buffer.getInteger(at: start + 4, as: UInt8.self) == 0,
           buffer.readableBytes >= 9 + length {
            var offset = start + 9
            while offset + 6 <= start + 9 + length {
                if buffer.getInteger(at: offset, as: UInt16.self) == 3 {
                    buffer.setInteger(UInt32(limit), at: offset + 2)
                }
                offset += 6
            }
            rewritten = true
        }
    }
}

/// Resets a stream opened beyond the advertised limit with PROTOCOL_ERROR, as Go's http2 server
/// does (`over_max_streams`), and counts the open ones.
final class StreamLimit: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload
    private let connection: ServedConnection
    private var counted = false
    private var refused = false

    init(connection: ServedConnection) {
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if let id = try? context.channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID) {
            connection.lastStreamID = max(connection.lastStreamID, id)
        }
        if connection.openStreams >= connection.streamLimit {
            refused = true
            connection.streamsRefused += 1
        } else {
            counted = true
            connection.openStreams += 1
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        if refused {
            context.writeAndFlush(wrapOutboundOut(.rstStream(.protocolError)), promise: nil)
            return
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted {
            counted = false
            connection.streamClosed()
        }
        if !refused { context.fireChannelInactive() }
    }
}

import ArgumentParser
import BridgeApp
import BridgeCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import WebhookSink

struct WebhookSinkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook-sink",
        abstract: "Changes of 1 KiB objects through the whole bridge to a webhook (each request answered 200): throughput, latency, memory.",
        discussion: "Starts a minimal HTTP/1.1 receiver on 127.0.0.1 (SwiftNIO, one thread) that reads each request whole and answers 200, unless --url is given.")

    @OptionGroup var server: ServerOptions

    @OptionGroup var run: SinkRunOptions

    @Option(help: "binary, structured or batch.")
    var mode = "binary"

    @Option(help: "Requests in flight.")
    var concurrency = 16

    @Option(help: "Events per batched request.")
    var batchMaxEvents = 100

    @Flag(help: "Sign every request (Standard Webhooks).")
    var sign = false

    @Option(help: "A receiver to use instead of the built-in one.")
    var url: String?

    func run() async throws {
        guard let mode = ContentMode(rawValue: mode) else { throw ValidationError("--mode: binary, structured or batch") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-bench-webhook-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let receiver = url == nil ? try await BenchReceiver.start() : nil
        let server = try await ServerProcess(binary: server.kubebridge)
        try await server.generate(count: run.objects, bytes: 1024)
        var options = WebhookSinkOptions(url: url ?? "http://127.0.0.1:\(receiver!.port)/events")
        options.mode = mode
        options.concurrency = concurrency
        options.batchMaxEvents = batchMaxEvents
        if sign { options.signingSecret = "whsec_" + Data("kubebridge-bench".utf8).base64EncodedString() }
        let measured = try await measureBridge(server: server, sink: Configuration.Sink(name: "webhook", kind: .webhook(options)), objects: run.objects,
                                               rate: run.rate, seconds: run.seconds, stateDirectory: directory.appendingPathComponent("state").path)
        await server.stop()
        print(measured.report(sink: "webhook (\(mode.rawValue)\(sign ? ", signed" : ""))"))
        if let receiver {
            print("receiver: \(receiver.requests) requests")
            try await receiver.stop()
        }
    }
}

/// An HTTP/1.1 endpoint that reads each request whole and answers 200 with no body: the cheapest
/// receiver, so the figures are the bridge's.
final class BenchReceiver: Sendable {
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    let counter: Counter
    var port: Int { channel.localAddress?.port ?? 0 }
    var requests: Int { counter.value.load(ordering: .relaxed) }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        /// While set, every request is answered 503.
        let failing = Atomic<Bool>(false)
    }

    private init(group: MultiThreadedEventLoopGroup, channel: any Channel, counter: Counter) {
        self.group = group
        self.channel = channel
        self.counter = counter
    }

    static func start() async throws -> BenchReceiver {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let counter = Counter()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(counter: counter))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return BenchReceiver(group: group, channel: channel, counter: counter)
    }

    func stop() async throws {
        try await channel.close()
        try await group.shutdownGracefully()
    }

    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let counter: Counter

        init(counter: Counter) {
            self.counter = counter
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let failing = counter.failing.load(ordering: .relaxed)
            if !failing { counter.value.add(1, ordering: .relaxed) }
            let head = HTTPResponseHead(version: .http1_1, status: failing ? .serviceUnavailable : .ok, headers: ["content-length": "0"])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

/// The receiver in a child process: prints its port, answers 503 after a `fail` line on stdin and
/// 200 again after `ok`, until stdin closes.
struct WebhookReceiverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "webhook-receiver", shouldDisplay: false)

    func run() async throws {
        let receiver = try await BenchReceiver.start()
        FileHandle.standardOutput.write(Data("\(receiver.port)\n".utf8))
        let counter = receiver.counter
        await Task.detached {
            while let line = readLine() {
                switch line {
                case "fail": counter.failing.store(true, ordering: .relaxed)
                case "ok": counter.failing.store(false, ordering: .relaxed)
                default: break
                }
            }
        }.value
        try await receiver.stop()
    }
}

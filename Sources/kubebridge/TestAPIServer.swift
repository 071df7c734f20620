import ArgumentParser
import Foundation
import KubeTestServer
import UnixSignals

struct TestAPIServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test-apiserver",
        abstract: "Run kubebridge's built-in test API server, a stand-in for kube-apiserver on 127.0.0.1.",
        discussion: """
            Serves discovery, CRUD, lists and watches like kube-apiserver v1.36 and writes a \
            kubeconfig for it, so that kubebridge (or kubectl) can be tried without a cluster.

            Examples:
              kubebridge test-apiserver --kubeconfig-out /tmp/test.kubeconfig &
              kubebridge discover --kubeconfig /tmp/test.kubeconfig
            """)

    @Option(help: ArgumentHelp("Where to write the kubeconfig for the server.", valueName: "file"))
    var kubeconfigOut = "kubebridge-test.kubeconfig"

    @Option(help: "Port on 127.0.0.1 (0 picks a free one).")
    var port = 0

    @Flag(help: "Serve plain HTTP instead of HTTPS.")
    var plainHTTP = false

    @Flag(help: "Serve HTTP/1.1 only, as a proxy in front of an API server may (by default h2 is offered first through ALPN, as kube-apiserver does).")
    var http1Only = false

    @Option(help: "SETTINGS_MAX_CONCURRENT_STREAMS of each HTTP/2 connection (kube-apiserver: 100).")
    var maxConcurrentStreams = 100

    func run() async throws {
        var options = KubeTestServer.Options()
        options.port = port
        options.tls = !plainHTTP
        if http1Only { options.http2 = false }
        options.maxConcurrentStreams = maxConcurrentStreams
        let server = try await KubeTestServer.start(options)
        do {
            try server.writeKubeconfig(to: kubeconfigOut)
        } catch {
            try? await server.stop()
            throw fail("cannot write \(kubeconfigOut): \(error.localizedDescription)")
        }
        // Trapped before the line below: a script may signal as soon as it reads it.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        // Written unbuffered: scripts wait for this line to know the server is up.
        FileHandle.standardOutput.write(Data("test API server listening on \(server.url); kubeconfig written to \(kubeconfigOut); Ctrl-C stops it\n".utf8))
        for await _ in signals { break }
        try await server.stop()
    }
}

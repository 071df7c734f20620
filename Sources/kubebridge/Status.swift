import ArgumentParser
import AsyncHTTPClient
import BridgeApp
import Foundation
import NIOCore

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a running kubebridge's watches and sinks: state, checkpoint, its age, and changes not yet confirmed.",
        discussion: """
            Reads GET /status from the operations endpoint of a running `kubebridge run`: the \
            address in the configuration (operations.address), or --address. In a cluster: \
            kubectl port-forward deploy/kubebridge 8080, then kubebridge status --address 127.0.0.1:8080.
            """)

    @Option(name: .long, help: ArgumentHelp("The configuration the running kubebridge uses.", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("host:port of its operations endpoint (overrides the configuration).", valueName: "host:port"))
    var address: String?

    @Flag(help: "Print the JSON document as it came.")
    var json = false

    func run() async throws {
        var target = address
        if target == nil, let config {
            let configuration = try loadConfiguration(config)
            guard let operations = configuration.operationsAddress, operations.port != 0 else {
                throw fail("\(config) gives no fixed operations.address; pass --address host:port")
            }
            target = "\(operations.host == "0.0.0.0" ? "127.0.0.1" : operations.host):\(operations.port)"
        }
        let url = "http://\(target ?? "127.0.0.1:8080")/status"
        let body: ByteBuffer
        do {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
            body = try await response.body.collect(upTo: 64 << 20)
            guard response.status == .ok else { throw fail("\(url) answered \(response.status.code)") }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw fail("\(url) cannot be read (is kubebridge running with its operations endpoint there?): \(error)")
        }
        let data = Data(body.readableBytesView)
        if json {
            print(String(decoding: data, as: UTF8.self))
            return
        }
        guard let document = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw fail("\(url) did not answer JSON") }
        print(Self.render(document))
    }

    static func render(_ document: [String: Any]) -> String {
        if document["phase"] as? String == "standing by" {
            return "ready: yes; standing by for the lease \(document["lease"] as? String ?? "?") as \(document["identity"] as? String ?? "?")"
        }
        let phase = document["phase"] as? String ?? "bridging"
        let progress = phase == "bridging" ? "changes received: \(document["received"] as? Int ?? 0)" : phase
        var lines: [String] = ["ready: \((document["ready"] as? Bool) == true ? "yes" : "no"); \(progress)"]
        lines += (document["notReady"] as? [String] ?? []).map { "  not ready: \($0)" }
        if let connections = document["connections"] as? [String: Int] {
            lines.append("connections to the API server: \(connections["watches"] ?? 0) for lists and watches, "
                + "\(connections["requestsHTTP2"] ?? 0) HTTP/2 and \(connections["requestsHTTP1"] ?? 0) HTTP/1.1 for other requests")
        }
        lines.append("")
        let watches = document["watches"] as? [[String: Any]] ?? []
        var rows = [["RESOURCE", "NAMESPACE", "STATE", "CHECKPOINT", "AGE", "UNCONFIRMED"]]
        for watch in watches {
            let age = (watch["checkpointAgeSeconds"] as? Double).map { String(format: "%.1fs", $0) } ?? "-"
            rows.append([watch["resource"] as? String ?? "", watch["namespace"] as? String ?? "*", watch["state"] as? String ?? "",
                         watch["checkpoint"] as? String ?? "-", age, "\(watch["unconfirmed"] as? Int ?? 0)"])
        }
        lines += table(rows)
        lines.append("")
        var sinkRows = [["SINK", "BUFFERED", "DELIVERED", "RETRIED", "DEAD-LETTERED", "STATE"]]
        for sink in document["sinks"] as? [[String: Any]] ?? [] {
            let state = (sink["stopped"] as? String).map { "stopped: \($0)" } ?? ((sink["connected"] as? Bool) == false ? "not connected" : "running")
            sinkRows.append([sink["name"] as? String ?? "", "\(sink["buffered"] as? Int ?? 0)", "\(sink["delivered"] as? Int ?? 0)",
                             "\(sink["retried"] as? Int ?? 0)", "\(sink["deadLettered"] as? Int ?? 0)", state])
        }
        lines += table(sinkRows)
        return lines.joined(separator: "\n")
    }

    static func table(_ rows: [[String]]) -> [String] {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
    }
}

import Foundation

/// One HTTP exchange recorded from a real kube-apiserver (see Fixtures/apiserver/README.md).
public struct Transcript: Sendable {
    public var name: String
    public var comments: [String]
    public var method: String
    public var target: String
    public var requestHeaders: [(String, String)]
    public var requestBody: String?
    public var statusCode: Int
    public var responseHeaders: [(String, String)]
    public var body: String

    /// The discovery transcripts had whole entries removed; their bodies are subsets.
    public var isTrimmed: Bool { comments.first?.contains("TRIMMED") ?? false }

    public var path: String { String(target.split(separator: "?", maxSplits: 1)[0]) }

    public func requestHeader(_ name: String) -> String? {
        requestHeaders.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    public func responseHeader(_ name: String) -> String? {
        responseHeaders.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    /// Watch bodies: one event per line.
    public var lines: [String] { body.split(separator: "\n").map(String.init) }

    public static let directory: URL = Fixtures.directory.appendingPathComponent("apiserver")

    /// Loads `NN-name.http` by its number.
    public static func load(_ number: Int) throws -> Transcript {
        let prefix = String(format: "%02d-", number)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        guard let file = files.first(where: { $0.hasPrefix(prefix) && $0.hasSuffix(".http") }) else {
            throw TestFailure(message: "no transcript \(prefix)*.http")
        }
        return try parse(String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8), name: file)
    }

    public static func parse(_ text: String, name: String) throws -> Transcript {
        var lines = text.components(separatedBy: "\n")[...]
        var comments: [String] = []
        while let line = lines.first, line.hasPrefix("#") {
            comments.append(line)
            lines.removeFirst()
        }
        guard let requestLine = lines.popFirst() else { throw TestFailure(message: "\(name): no request line") }
        let requestParts = requestLine.split(separator: " ")
        var requestHeaders: [(String, String)] = []
        while let line = lines.popFirst(), !line.isEmpty {
            let parts = line.split(separator: ":", maxSplits: 1)
            requestHeaders.append((String(parts[0]), String(parts[1]).trimmingCharacters(in: .whitespaces)))
        }
        var requestBody: String?
        if let line = lines.first, !line.hasPrefix("HTTP/1.1") {
            requestBody = line
            lines.removeFirst()
            if lines.first == "" { lines.removeFirst() }
        }
        guard let statusLine = lines.popFirst(), statusLine.hasPrefix("HTTP/1.1 ") else {
            throw TestFailure(message: "\(name): no status line")
        }
        let statusCode = Int(statusLine.split(separator: " ")[1])!
        var responseHeaders: [(String, String)] = []
        while let line = lines.popFirst(), !line.isEmpty {
            let parts = line.split(separator: ":", maxSplits: 1)
            responseHeaders.append((String(parts[0]), String(parts[1]).trimmingCharacters(in: .whitespaces)))
        }
        return Transcript(
            name: name, comments: comments, method: String(requestParts[0]), target: String(requestParts[1]),
            requestHeaders: requestHeaders, requestBody: requestBody, statusCode: statusCode, responseHeaders: responseHeaders,
            body: lines.joined(separator: "\n"))
    }
}

/// A test precondition that did not hold, with the reason.
public struct TestFailure: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}

/// The fixtures every test target reads (`Tests/TestSupport/Fixtures`).
public enum Fixtures {
    public static let directory: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    /// The same folder in the source tree, for a test that writes fixtures on purpose.
    public static let sourceDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
}

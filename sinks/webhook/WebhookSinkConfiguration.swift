import BridgeCore
import ConfigReading
import Foundation
import Yams

extension WebhookSinkOptions {
    /// The keys of a `type: webhook` entry of `sinks`, besides those every sink has.
    public static let configurationKeys = ["url", "mode", "batchMaxEvents", "batchMaxBytes", "concurrency", "timeout", "retryWindow", "maxRetryAfter",
                                           "headers", "bearerTokenFile", "signingSecretFile", "signingSecretEnv", "caFile"]
}

extension ConfigReader {
    /// A `type: webhook` entry of `sinks` (its `fields`, at `key`): nil when it has a problem, reported.
    public mutating func webhookSink(_ fields: [String: Node], node: Node, key: String) -> WebhookSinkOptions? {
        guard let url = string(fields["url"], "\(key).url"), !url.isEmpty else {
            problem(node, "\(key).url", "a webhook sink needs a url (http:// or https://)")
            return nil
        }
        var options = WebhookSinkOptions(url: environmentExpanded(url, node: fields["url"]!, key: "\(key).url"))
        if let mode = choice(fields["mode"], "\(key).mode", of: ContentMode.self) { options.mode = mode }
        if let events = int(fields["batchMaxEvents"], "\(key).batchMaxEvents", minimum: 1) { options.batchMaxEvents = events }
        if let bytes = int(fields["batchMaxBytes"], "\(key).batchMaxBytes", minimum: 1024) { options.batchMaxBytes = bytes }
        if let concurrency = int(fields["concurrency"], "\(key).concurrency", minimum: 1) { options.concurrency = concurrency }
        if let timeout = duration(fields["timeout"], "\(key).timeout") { options.timeout = timeout }
        if let window = duration(fields["retryWindow"], "\(key).retryWindow") { options.retryWindow = window }
        if let limit = duration(fields["maxRetryAfter"], "\(key).maxRetryAfter") { options.maxRetryAfter = limit }
        if let headers = fields["headers"] {
            for (name, value) in mapping(headers, "\(key).headers", allowed: nil).sorted(by: { $0.key < $1.key }) {
                guard let text = string(value, "\(key).headers.\(name)") else { continue }
                options.headers.append((name, environmentExpanded(text, node: value, key: "\(key).headers.\(name)")))
            }
        }
        options.bearerTokenFile = string(fields["bearerTokenFile"], "\(key).bearerTokenFile")
        options.caFile = string(fields["caFile"], "\(key).caFile")
        switch (fields["signingSecretFile"], fields["signingSecretEnv"]) {
        case (.some(let fileNode), .some):
            problem(fileNode, "\(key).signingSecretFile", "give signingSecretFile or signingSecretEnv, not both")
        case (.some(let fileNode), nil):
            if let path = string(fileNode, "\(key).signingSecretFile") {
                if let data = FileManager.default.contents(atPath: path) {
                    options.signingSecret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                } else {
                    problem(fileNode, "\(key).signingSecretFile", "\(path) cannot be read")
                }
            }
        case (nil, .some(let envNode)):
            if let name = string(envNode, "\(key).signingSecretEnv") {
                if let value = environment[name], !value.isEmpty {
                    options.signingSecret = value
                } else {
                    problem(envNode, "\(key).signingSecretEnv", "the environment variable \(name) is not set")
                }
            }
        case (nil, nil):
            break
        }
        return validated(options, node: node, key: key) { try $0.validate() }
    }
}

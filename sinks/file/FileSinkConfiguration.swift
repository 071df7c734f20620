import ConfigReading
import Yams

extension FileSink.Options {
    /// The keys of a `type: file` entry of `sinks`, besides those every sink has.
    public static let configurationKeys = ["path", "maxFileBytes", "keepFiles"]
}

extension ConfigReader {
    /// A `type: file` entry of `sinks` (its `fields`, at `key`): nil when it has a problem, reported.
    public mutating func fileSink(_ fields: [String: Node], node: Node, key: String) -> FileSink.Options? {
        guard let path = string(fields["path"], "\(key).path"), !path.isEmpty else {
            problem(node, "\(key).path", "a file sink needs a path")
            return nil
        }
        var options = FileSink.Options(path: path)
        if let bytes = int(fields["maxFileBytes"], "\(key).maxFileBytes", minimum: 4096) { options.maxFileBytes = bytes }
        if let keep = int(fields["keepFiles"], "\(key).keepFiles", minimum: 1) { options.keepFiles = keep }
        return options
    }
}

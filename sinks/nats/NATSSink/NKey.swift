import Crypto
import Foundation

/// NATS nkeys: Ed25519 keys written in base32 with a type prefix and a CRC-16 checksum. A user
/// gives kubebridge only the seed file; the public key the server knows is derived from it.
public enum NKey {
    /// The user public key (`U...`) of the user seed (`SU...`) in `file`.
    public static func userPublicKey(seedFile file: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw NATSError(description: "nkeySeedFile \(file) cannot be read")
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let line = text.split(whereSeparator: \.isNewline).map({ $0.trimmingCharacters(in: .whitespaces) }).first(where: { $0.hasPrefix("SU") }) else {
            throw NATSError(description: "nkeySeedFile \(file) holds no user seed (a line starting with SU)")
        }
        return try userPublicKey(seed: line)
    }

    public static func userPublicKey(seed: String) throws -> String {
        guard let raw = base32Decode(seed), raw.count == 36, checksum(raw[..<34]) == UInt16(raw[34]) | UInt16(raw[35]) << 8 else {
            throw NATSError(description: "the nkey seed is not valid (base32 with a checksum, starting with SU)")
        }
        // Two prefix bytes: the seed marker (18 << 3) and the key's type (user: 20 << 3), packed.
        let type = (raw[0] & 0x07) << 5 | (raw[1] >> 3)
        guard raw[0] & 0xF8 == 18 << 3, type == 20 << 3 else {
            throw NATSError(description: "the nkey seed is not a user seed (SU...)")
        }
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: raw[2..<34])
        var encoded = [type] + Array(key.publicKey.rawRepresentation)
        let sum = checksum(encoded[...])
        encoded += [UInt8(sum & 0xFF), UInt8(sum >> 8)]
        return base32Encode(encoded)
    }

    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    static func base32Encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var buffer = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | Int(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[(buffer >> (bits - 5)) & 0x1F])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[(buffer << (5 - bits)) & 0x1F]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func base32Decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = 0
        var bits = 0
        for character in text.utf8 {
            guard let value = alphabet.firstIndex(of: character) else { return nil }
            buffer = (buffer << 5 | value) & 0xFFFF
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> (bits - 8)) & 0xFF))
                bits -= 8
            }
        }
        return out
    }

    /// CRC-16/XMODEM, as nkeys checks them.
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? crc << 1 ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}

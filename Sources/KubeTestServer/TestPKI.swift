import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority made at start, with a server certificate for 127.0.0.1 and localhost
/// and client certificates for users, so that the test server speaks real, verified TLS.
public struct TestPKI: Sendable {
    public struct Identity: Sendable {
        public var certificatePEM: String
        public var privateKeyPEM: String
    }

    public let caCertificatePEM: String
    private let caKey: P256.Signing.PrivateKey
    private let caName: DistinguishedName
    public let server: Identity

    public init(commonName: String = "kubebridge-test-ca") throws {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86400 * 365),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
            },
            issuerPrivateKey: .init(key))
        caKey = key
        caName = name
        caCertificatePEM = try certificate.serializeAsPEM().pemString
        server = try TestPKI.issue(
            commonName: "kube-apiserver", organization: nil, serverNames: ["localhost"], addresses: ["127.0.0.1"],
            caKey: key, caName: name, serverAuth: true)
    }

    /// A client certificate whose common name is the user name, as kube-apiserver's x509 authenticator reads it.
    public func clientIdentity(user: String, group: String? = nil) throws -> Identity {
        try TestPKI.issue(commonName: user, organization: group, serverNames: [], addresses: [], caKey: caKey, caName: caName, serverAuth: false)
    }

    private static func issue(
        commonName: String, organization: String?, serverNames: [String], addresses: [String],
        caKey: P256.Signing.PrivateKey, caName: DistinguishedName, serverAuth: Bool
    ) throws -> Identity {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            if let organization { OrganizationName(organization) }
            CommonName(commonName)
        }
        let now = Date()
        var names: [GeneralName] = serverNames.map { .dnsName($0) }
        for address in addresses {
            let octets = address.split(separator: ".").compactMap { UInt8($0) }
            names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(octets))))
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86400 * 365),
            issuer: caName, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([serverAuth ? .serverAuth : .clientAuth])
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: .init(caKey))
        return Identity(certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation)
    }

    /// The common name of a DER certificate's subject.
    static func commonName(ofDER der: [UInt8]) -> String? {
        guard let certificate = try? Certificate(derEncoded: der) else { return nil }
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                let text = String(describing: attribute.value)
                return text
            }
        }
        return nil
    }
}

import Crypto
import Foundation
import NIOSSL
import SwitchboardCore
import X509

/// The certificate and key STARTTLS uses: from `[xmpp] tls_cert_file` /
/// `tls_key_file`, or else a self-signed certificate for the domain, made once
/// under `data_dir` (its SHA-256 fingerprint is logged so clients can pin it).
struct XMPPTLS: Sendable {
    let context: NIOSSLContext
    /// SHA-256 of the certificate (DER), colon-separated hex.
    let fingerprint: String
    /// Where the certificate came from, for the log.
    let source: String

    static func load(settings: XMPPSettings) throws -> XMPPTLS {
        let certPath: String
        let keyPath: String
        let source: String
        if let cert = settings.tlsCertFile, let key = settings.tlsKeyFile {
            (certPath, keyPath, source) = (cert, key, "configured")
        } else {
            certPath = (settings.dataDir as NSString).appendingPathComponent("xmpp-\(settings.domain).crt")
            keyPath = (settings.dataDir as NSString).appendingPathComponent("xmpp-\(settings.domain).key")
            if !FileManager.default.fileExists(atPath: certPath) || !FileManager.default.fileExists(atPath: keyPath) {
                try generateSelfSigned(domain: settings.domain, certPath: certPath, keyPath: keyPath)
                source = "generated self-signed"
            } else {
                source = "self-signed"
            }
        }
        let chain = try NIOSSLCertificate.fromPEMFile(certPath)
        let key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        guard let leaf = chain.first else { throw SwitchboardError("tls_setup", "no certificate in \(certPath)") }
        let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                     privateKey: .privateKey(key))
        let der = try leaf.toDERBytes()
        let fingerprint = SHA256.hash(data: der).map { String(format: "%02X", $0) }.joined(separator: ":")
        return XMPPTLS(context: try NIOSSLContext(configuration: configuration), fingerprint: fingerprint, source: "\(source) \(certPath)")
    }

    /// A P-256 key and a ten-year self-signed certificate naming `domain` and `conference.<domain>`.
    static func generateSelfSigned(domain: String, certPath: String, keyPath: String) throws {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(domain) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(10 * 365 * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                SubjectAlternativeNames([.dnsName(domain), .dnsName("conference.\(domain)")])
                try ExtendedKeyUsage([.serverAuth])
            },
            issuerPrivateKey: .init(key))
        let directory = (certPath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: keyPath, contents: Data(key.pemRepresentation.utf8),
                                             attributes: [.posixPermissions: 0o600]),
              FileManager.default.createFile(atPath: certPath, contents: Data(try certificate.serializeAsPEM().pemString.utf8))
        else { throw SwitchboardError("tls_setup", "cannot write \(certPath) / \(keyPath)") }
    }
}

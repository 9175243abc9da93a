using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// A throw-away CA and a server certificate for 127.0.0.1/localhost, written as PEM files, so the
/// clients verify the broker's chain for real (no "insecure" flags anywhere).
/// </summary>
public sealed class TestPki
{
    private TestPki(string caPath, string certificatePath, string keyPath)
    {
        CaPath = caPath;
        CertificatePath = certificatePath;
        KeyPath = keyPath;
    }

    public string CaPath { get; }

    public string CertificatePath { get; }

    public string KeyPath { get; }

    public static TestPki Create(string directory)
    {
        var notBefore = DateTimeOffset.UtcNow.AddDays(-1);
        var notAfter = DateTimeOffset.UtcNow.AddDays(30);

        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Relay interop test CA", caKey, HashAlgorithmName.SHA256);
        // Python's ssl module verifies with X509_V_FLAG_X509_STRICT, which wants a critical basic
        // constraints extension on the CA and key identifiers on both certificates.
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using var ca = caRequest.CreateSelfSigned(notBefore, notAfter);

        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", serverKey, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        using var server = request.Create(ca, notBefore, notAfter, RandomNumberGenerator.GetBytes(16));

        var pki = new TestPki(Path.Combine(directory, "ca.pem"), Path.Combine(directory, "server.pem"), Path.Combine(directory, "server.key"));
        File.WriteAllText(pki.CaPath, ca.ExportCertificatePem() + "\n");
        File.WriteAllText(pki.CertificatePath, server.ExportCertificatePem() + "\n");
        File.WriteAllText(pki.KeyPath, serverKey.ExportPkcs8PrivateKeyPem() + "\n");
        return pki;
    }
}

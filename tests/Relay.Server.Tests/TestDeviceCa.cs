using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Server.Tests;

/// <summary>
/// A throw-away device CA (PEM on disk, for <c>Relay:Mqtt:ClientCertificateAuthorityPath</c>) and one
/// client certificate it issued, for the tests of MQTT TLS client authentication.
/// </summary>
internal static class TestDeviceCa
{
    /// <summary>Writes ca.pem into <paramref name="directory"/> and returns it with a client certificate for <paramref name="commonName"/>.</summary>
    public static (string CaPath, X509Certificate2 Device) Create(string directory, string commonName)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Test Device CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        var caPath = Path.Combine(directory, "ca.pem");
        File.WriteAllText(caPath, ca.ExportCertificatePem());

        using var deviceKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var deviceRequest = new CertificateRequest("CN=" + commonName, deviceKey, HashAlgorithmName.SHA256);
        // TLS Web Client Authentication: the server accepts the certificate only for that purpose.
        deviceRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        using var issued = deviceRequest.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3, 4]);
        using var withKey = issued.CopyWithPrivateKey(deviceKey);
        return (caPath, X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null));
    }
}

using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// A CA made in the test, as a public CA is built: root → intermediate → leaf. Server leaves are written the way
/// certbot writes them (fullchain.pem = leaf + intermediate, privkey.pem), so a listener that drops the
/// intermediate is caught by a client that trusts the root only.
/// </summary>
internal sealed class TestPkiChain : IDisposable
{
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2");
    private readonly ECDsa _rootKey;
    private readonly ECDsa _intermediateKey;
    private long _serial = 0x1000;

    public TestPkiChain(string directory, string name = "Test")
    {
        Directory = directory;
        _rootKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var rootRequest = new CertificateRequest($"CN={name} Root CA", _rootKey, HashAlgorithmName.SHA256);
        rootRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        rootRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        rootRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(rootRequest.PublicKey, false));
        Root = rootRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-60), DateTimeOffset.UtcNow.AddYears(1));

        _intermediateKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var intermediateRequest = new CertificateRequest($"CN={name} Intermediate CA", _intermediateKey, HashAlgorithmName.SHA256);
        intermediateRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        intermediateRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        intermediateRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(intermediateRequest.PublicKey, false));
        intermediateRequest.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Root, true, false));
        using var intermediate = intermediateRequest.Create(Root, DateTimeOffset.UtcNow.AddDays(-30), DateTimeOffset.UtcNow.AddMonths(6), Serial());
        Intermediate = intermediate.CopyWithPrivateKey(_intermediateKey);

        RootPath = Path.Combine(directory, $"{name.ToLowerInvariant()}-root.pem");
        File.WriteAllText(RootPath, Root.ExportCertificatePem());
    }

    public string Directory { get; }

    public X509Certificate2 Root { get; }

    public X509Certificate2 Intermediate { get; }

    /// <summary>The root alone, PEM: what a client trusts (<c>curl --cacert</c>), or <c>ClientCertificateAuthorityPath</c>.</summary>
    public string RootPath { get; }

    public string FullChainPath => Path.Combine(Directory, "fullchain.pem");

    public string PrivateKeyPath => Path.Combine(Directory, "privkey.pem");

    /// <summary>
    /// Issues a server leaf for 127.0.0.1/localhost and writes fullchain.pem (leaf then intermediate) and
    /// privkey.pem, replacing what was there (each file written whole and renamed into place, as certbot
    /// swaps its links); returns the leaf's serial number (hex, as openssl prints it).
    /// </summary>
    public string IssueServer()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([ServerAuth], false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Intermediate, true, false));
        using var leaf = request.Create(Intermediate, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(30), Serial());
        WriteReplacing(FullChainPath, leaf.ExportCertificatePem() + "\n" + Intermediate.ExportCertificatePem() + "\n");
        WriteReplacing(PrivateKeyPath, key.ExportPkcs8PrivateKeyPem() + "\n");
        return leaf.SerialNumber;
    }

    /// <summary>
    /// A client certificate issued by the intermediate (or the root), written as (leaf + intermediate, key) PEM files named
    /// after <paramref name="file"/>; returns the paths and the certificate with its key.
    /// </summary>
    public (string CertificatePath, string KeyPath, X509Certificate2 Certificate) IssueClient(string commonName, string file, Oid[]? usages = null, DateTimeOffset? notBefore = null, DateTimeOffset? notAfter = null, bool fromRoot = false)
    {
        var issuer = fromRoot ? Root : Intermediate;
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=" + commonName, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([.. usages ?? [ClientAuth]], false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(issuer, true, false));
        using var issued = request.Create(issuer, notBefore ?? DateTimeOffset.UtcNow.AddHours(-1), notAfter ?? DateTimeOffset.UtcNow.AddDays(30), Serial());
        var certificatePath = Path.Combine(Directory, file + ".pem");
        var keyPath = Path.Combine(Directory, file + ".key");
        File.WriteAllText(certificatePath, issued.ExportCertificatePem() + "\n" + (fromRoot ? string.Empty : Intermediate.ExportCertificatePem() + "\n"));
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem() + "\n");
        using var withKey = issued.CopyWithPrivateKey(key);
        return (certificatePath, keyPath, X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null));
    }

    public void Dispose()
    {
        Root.Dispose();
        Intermediate.Dispose();
        _rootKey.Dispose();
        _intermediateKey.Dispose();
    }

    private static void WriteReplacing(string path, string text)
    {
        var temporary = path + ".new";
        File.WriteAllText(temporary, text, Encoding.ASCII);
        File.Move(temporary, path, overwrite: true);
    }

    private byte[] Serial()
    {
        var serial = Interlocked.Increment(ref _serial) + (Random.Shared.NextInt64(1, 1 << 30) << 16);
        var bytes = BitConverter.GetBytes(serial);
        if (BitConverter.IsLittleEndian)
        {
            Array.Reverse(bytes);
        }

        bytes[0] &= 0x7F; // positive
        bytes[0] |= 0x10; // no leading zero byte, so openssl prints all of it
        return bytes;
    }
}

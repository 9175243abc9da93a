using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary>The one certificate of every TLS listener (<c>Relay:Tls</c>), or none when TLS is off.</summary>
internal sealed class ServerCertificate : IDisposable
{
    private readonly Lazy<X509Certificate2?> _certificate;

    /// <summary>Loads on first use; the options were validated (and the files read once) at start.</summary>
    public ServerCertificate(IOptions<TlsOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _certificate = new(() =>
        {
            var errors = new List<string>();
            var certificate = TryLoad(options.Value, errors);
            return errors.Count == 0 ? certificate : throw RelayConfigurationException.FromProblems(errors);
        });
    }

    /// <summary>The loaded certificate when TLS is configured.</summary>
    public X509Certificate2? Certificate => _certificate.Value;

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_certificate.IsValueCreated)
        {
            _certificate.Value?.Dispose();
        }
    }

    /// <summary>Null when TLS is off or the files are unusable (with a line in <paramref name="errors"/>).</summary>
    internal static X509Certificate2? TryLoad(TlsOptions tls, List<string> errors)
    {
        var hasCertificate = !string.IsNullOrWhiteSpace(tls.CertificatePath);
        var hasKey = !string.IsNullOrWhiteSpace(tls.KeyPath);
        if (hasCertificate != hasKey)
        {
            errors.Add($"{(hasCertificate ? "Relay:Tls:KeyPath" : "Relay:Tls:CertificatePath")}: must be set together with {(hasCertificate ? "Relay:Tls:CertificatePath" : "Relay:Tls:KeyPath")}");
            return null;
        }

        if (!hasCertificate)
        {
            return null;
        }

        if (!File.Exists(tls.CertificatePath))
        {
            errors.Add($"Relay:Tls:CertificatePath: file '{tls.CertificatePath}' does not exist");
            return null;
        }

        if (!File.Exists(tls.KeyPath))
        {
            errors.Add($"Relay:Tls:KeyPath: file '{tls.KeyPath}' does not exist");
            return null;
        }

        try
        {
            using var pem = X509Certificate2.CreateFromPemFile(tls.CertificatePath!, tls.KeyPath);

            // Re-import as PKCS#12: SslStream on Linux needs a key that is not ephemeral.
            return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or IOException)
        {
            errors.Add($"Relay:Tls:CertificatePath/KeyPath: cannot load the PEM certificate and key ({e.Message})");
            return null;
        }
    }
}

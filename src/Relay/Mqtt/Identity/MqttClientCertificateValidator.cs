using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Relay.Server.Hosting;
using Relay.Server.Primitives;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Decides, during the TLS handshake on the MQTT TLS port, whether a client certificate may be used at all
/// (review M8). It must chain to <c>Relay:Mqtt:ClientCertificateAuthorityPath</c> alone
/// (<see cref="X509ChainTrustMode.CustomRootTrust"/>: the machine's store trusts public CAs that would issue
/// anyone a certificate with CN = some device id), with the intermediates the client sent (RFC 8446 §4.4.2) as
/// the only other certificates; be valid now; and, when it lists extended key usages, include TLS client
/// authentication (RFC 5280 §4.2.1.12). Which device it names (subject CN = a registered device id = the client
/// id) is <see cref="MqttAuthenticator"/>'s decision at CONNECT. Revocation is not checked: disable the device
/// (or remove it) to shut a certificate out.
/// </summary>
internal sealed class MqttClientCertificateValidator
{
    private static readonly Oid ClientAuthentication = new("1.3.6.1.5.5.7.3.2");

    private readonly X509Certificate2Collection _authorities;
    private readonly bool _required;
    private readonly MqttIdentityMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly LogThrottle _logThrottle;

    private MqttClientCertificateValidator(X509Certificate2Collection authorities, bool required, MqttIdentityMetrics metrics, ILogger logger, TimeProvider time)
    {
        _authorities = authorities;
        _required = required;
        _metrics = metrics;
        _logger = logger;
        _time = time;
        _logThrottle = new LogThrottle(1, TimeSpan.FromSeconds(10), time);
    }

    /// <summary>Null when client certificates are off; otherwise the validator for the configured CA bundle (validated at start).</summary>
    public static MqttClientCertificateValidator? Create(MqttOptions options, MqttIdentityMetrics metrics, ILogger logger, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.ClientCertificateMode == MqttClientCertificateMode.None)
        {
            return null;
        }

        var errors = new List<string>();
        var authorities = LoadAuthorities(options.ClientCertificateAuthorityPath, errors);
        return authorities is null
            ? throw RelayConfigurationException.FromProblems(errors)
            : new MqttClientCertificateValidator(authorities, options.ClientCertificateMode == MqttClientCertificateMode.Required, metrics, logger, time);
    }

    /// <summary>The CA bundle, or null with a line in <paramref name="errors"/> (missing, unreadable, no certificate in it).</summary>
    public static X509Certificate2Collection? LoadAuthorities(string? path, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        const string Key = MqttOptions.SectionName + ":ClientCertificateAuthorityPath";
        if (string.IsNullOrWhiteSpace(path))
        {
            errors.Add($"{Key}: required when {MqttOptions.SectionName}:ClientCertificateMode is not None (a PEM file of the CAs that issue device certificates; the system store is never used for devices)");
            return null;
        }

        if (!File.Exists(path))
        {
            errors.Add($"{Key}: file '{path}' does not exist");
            return null;
        }

        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(path);
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
        {
            errors.Add($"{Key}: cannot read '{path}' ({e.Message})");
            return null;
        }

        if (authorities.Count == 0)
        {
            errors.Add($"{Key}: '{path}' holds no PEM certificate");
            return null;
        }

        return authorities;
    }

    /// <summary>Asks for a client certificate and checks it with <see cref="Validate"/>.</summary>
    public void Apply(SslServerAuthenticationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);

        // Asked for in both modes; in Optional a client without one goes on to CONNECT credentials.
        options.ClientCertificateRequired = true;
        options.RemoteCertificateValidationCallback = Validate;
    }

    /// <summary>The TLS layer's callback. <paramref name="sent"/> is the chain SslStream built; only the certificates the client sent are taken from it.</summary>
    public bool Validate(object sender, X509Certificate? certificate, X509Chain? sent, SslPolicyErrors errors)
    {
        if (certificate is null)
        {
            if (_required)
            {
                Refuse(MqttIdentityMetrics.CertificateRefusal.Missing, null);
                return false;
            }

            return true;
        }

        if (certificate is not X509Certificate2 leaf)
        {
            Refuse(MqttIdentityMetrics.CertificateRefusal.Untrusted, null);
            return false;
        }

        using var chain = new X509Chain();
        var policy = chain.ChainPolicy;
        policy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        policy.CustomTrustStore.AddRange(_authorities);
        policy.RevocationMode = X509RevocationMode.NoCheck;
        policy.DisableCertificateDownloads = true;
        policy.VerificationTime = _time.GetUtcNow().UtcDateTime;

        // A certificate with an EKU extension must list clientAuth; one without the extension is unrestricted.
        policy.ApplicationPolicy.Add(ClientAuthentication);
        if (sent is not null)
        {
            policy.ExtraStore.AddRange(sent.ChainPolicy.ExtraStore);
        }

        if (chain.Build(leaf))
        {
            return true;
        }

        var status = X509ChainStatusFlags.NoError;
        foreach (var element in chain.ChainStatus)
        {
            status |= element.Status;
        }

        var reason = (status & X509ChainStatusFlags.NotTimeValid) != 0 ? MqttIdentityMetrics.CertificateRefusal.Expired
            : (status & X509ChainStatusFlags.NotValidForUsage) != 0 ? MqttIdentityMetrics.CertificateRefusal.Usage
            : MqttIdentityMetrics.CertificateRefusal.Untrusted;
        Refuse(reason, leaf);
        return false;
    }

    private void Refuse(MqttIdentityMetrics.CertificateRefusal reason, X509Certificate2? certificate)
    {
        _metrics.CertificateRefused(reason);
        if (_logThrottle.TryEnter(0, out var suppressed))
        {
            // The subject and issuer are the client's words: shortened and escaped.
            _logger.LogInformation("MQTT TLS client certificate refused ({Reason}): subject {Subject}, issuer {Issuer} ({Suppressed} more refusals since the last such line)", reason, LogText.Safe(certificate?.Subject), LogText.Safe(certificate?.Issuer), suppressed);
        }
    }
}

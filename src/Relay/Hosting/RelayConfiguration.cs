using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Configuration;
using Relay.Server.Api;
using Relay.Server.Mqtt;
using Relay.Rendezvous.Stun;
using Relay.Server.Turn;

namespace Relay.Server.Hosting;

/// <summary>A configuration problem that must stop startup; the message names the key.</summary>
public sealed class RelayConfigurationException(string message) : Exception(message);

/// <summary>
/// Binds and validates every option once, before any listener is created, so a bad value stops the
/// process with a message naming the key instead of surfacing later as a dead listener.
/// </summary>
public sealed class RelayConfiguration
{
    private RelayConfiguration(RelayOptions relay, HttpOptions http, TlsOptions tls, StunOptions stun, TurnOptions turn, ApiOptions api, MqttOptions mqtt, X509Certificate2? certificate)
    {
        Mqtt = mqtt;
        Api = api;
        Relay = relay;
        Http = http;
        Tls = tls;
        Stun = stun;
        Turn = turn;
        Certificate = certificate;
    }

    /// <summary><c>Relay</c>.</summary>
    public RelayOptions Relay { get; }

    /// <summary><c>Relay:Http</c>.</summary>
    public HttpOptions Http { get; }

    /// <summary><c>Relay:Tls</c>.</summary>
    public TlsOptions Tls { get; }

    /// <summary><c>Relay:Stun</c>.</summary>
    public StunOptions Stun { get; }

    /// <summary><c>Relay:Api</c>.</summary>
    public ApiOptions Api { get; }

    /// <summary><c>Relay:Turn</c>.</summary>
    public TurnOptions Turn { get; }

    /// <summary><c>Relay:Mqtt</c>.</summary>
    public MqttOptions Mqtt { get; }

    /// <summary>The loaded certificate when TLS is configured.</summary>
    public X509Certificate2? Certificate { get; }

    /// <summary>Binds and validates; throws <see cref="RelayConfigurationException"/> listing every problem.</summary>
    public static RelayConfiguration Load(IConfiguration configuration)
    {
        var errors = new List<string>();
        var relay = Bind<RelayOptions>(configuration, RelayOptions.SectionName, errors, strict: false);
        var http = Bind<HttpOptions>(configuration, HttpOptions.SectionName, errors);
        var tls = Bind<TlsOptions>(configuration, TlsOptions.SectionName, errors);
        var stun = Bind<StunOptions>(configuration, StunOptions.SectionName, errors);
        var turn = Bind<TurnOptions>(configuration, TurnOptions.SectionName, errors);
        var api = Bind<ApiOptions>(configuration, ApiOptions.SectionName, errors);
        var mqtt = Bind<MqttOptions>(configuration, MqttOptions.SectionName, errors);
        if (errors.Count == 0)
        {
            Validate(relay, http, stun, errors);
            TurnOptionsValidator.Validate(turn, errors);
            ValidateMqtt(mqtt, http, stun, errors);
            _ = global::Relay.Server.Push.Commands.PushOptions.Bind(configuration, errors);
            _ = global::Relay.Server.Rendezvous.RendezvousOptionsBinder.Bind(configuration, errors);
        }

        X509Certificate2? certificate = null;
        if (errors.Count == 0)
        {
            certificate = LoadCertificate(tls, errors);
        }

        if (errors.Count > 0)
        {
            throw new RelayConfigurationException("Invalid configuration:" + Environment.NewLine + "  " + string.Join(Environment.NewLine + "  ", errors));
        }

        return new RelayConfiguration(relay, http, tls, stun, turn, api, mqtt, certificate);
    }

    /// <summary>Parsed listen addresses, or null meaning "all addresses".</summary>
    public static IReadOnlyList<IPAddress>? ParseAddresses(IList<string> addresses) =>
        addresses.Count == 0 ? null : addresses.Select(IPAddress.Parse).ToArray();

    // Strict binding rejects misspelt keys under a section; the root section is not strict because
    // its children are other services' sections.
    private static T Bind<T>(IConfiguration configuration, string section, List<string> errors, bool strict = true)
        where T : new()
    {
        var options = new T();
        try
        {
            configuration.GetSection(section).Bind(options, binder => binder.ErrorOnUnknownConfiguration = strict);
        }
        catch (InvalidOperationException e) when (e.InnerException is null && e.Message.Contains("were not found", StringComparison.Ordinal))
        {
            // The binder lists misspelt keys as "...the following properties were not found on the instance of T: 'A', 'B'".
            var unknown = e.Message[(e.Message.LastIndexOf(": ", StringComparison.Ordinal) + 2)..];
            errors.Add($"{section}: unknown key(s) {unknown}; see README.md's configuration reference for the valid keys");
        }
        catch (InvalidOperationException e)
        {
            // Conversion failures already name the key ("Failed to convert configuration value at 'Relay:Stun:Port'...").
            errors.Add(e.InnerException is null ? e.Message : $"{e.Message} ({e.InnerException.Message})");
        }

        return options;
    }

    private static void Validate(RelayOptions relay, HttpOptions http, StunOptions stun, List<string> errors)
    {
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"{key}: {problem}");
            }
        }

        static bool IsPort(int port) => port is >= 1 and <= 65535;

        Check(!string.IsNullOrWhiteSpace(relay.DataDirectory), "Relay:DataDirectory", "must not be empty");
        Check(IsPort(http.Port), "Relay:Http:Port", $"must be a port between 1 and 65535 (was {http.Port})");
        Check(IsPort(stun.Port), "Relay:Stun:Port", $"must be a port between 1 and 65535 (was {stun.Port})");
        Check(IsPort(stun.TlsPort), "Relay:Stun:TlsPort", $"must be a port between 1 and 65535 (was {stun.TlsPort})");
        Check(stun.TlsPort != stun.Port, "Relay:Stun:TlsPort", $"must differ from Relay:Stun:Port (both are {stun.Port}; TCP and TLS cannot share a port)");
        Check(http.Port != stun.Port && http.Port != stun.TlsPort, "Relay:Http:Port", $"must differ from the STUN ports (was {http.Port})");
        Check(stun.AlternatePort == 0 || IsPort(stun.AlternatePort), "Relay:Stun:AlternatePort", $"must be 0 (Port + 1) or a port between 1 and 65535 (was {stun.AlternatePort})");
        Check(stun.MaxMessageSize is >= 576 and <= 65535, "Relay:Stun:MaxMessageSize", $"must be between 576 and 65535 bytes (was {stun.MaxMessageSize})");
        Check(stun.UdpBatchSize is >= 0 and <= 1024, "Relay:Stun:UdpBatchSize", $"must be between 0 (portable path) and 1024 (was {stun.UdpBatchSize})");
        Check(stun.UdpReceiveLoops is >= 0 and <= 64, "Relay:Stun:UdpReceiveLoops", $"must be between 0 (one per CPU) and 64 (was {stun.UdpReceiveLoops})");
        Check(Encoding.UTF8.GetByteCount(stun.Software ?? string.Empty) <= 763, "Relay:Stun:Software", "must be at most 763 bytes of UTF-8 (RFC 8489 §14.14)");
        Check(stun.RateLimit.RequestsPerSecond >= 1, "Relay:Stun:RateLimit:RequestsPerSecond", $"must be at least 1 (was {stun.RateLimit.RequestsPerSecond}); set Relay:Stun:RateLimit:Enabled=false to turn the limit off");
        Check(stun.RateLimit.Burst >= 1, "Relay:Stun:RateLimit:Burst", $"must be at least 1 (was {stun.RateLimit.Burst})");
        Check(stun.RateLimit.MaxTrackedSources is >= 16 and <= 16_777_216, "Relay:Stun:RateLimit:MaxTrackedSources", $"must be between 16 and 16777216 (was {stun.RateLimit.MaxTrackedSources})");
        Check(stun.Tcp.MaxConnectionsPerIp >= 1, "Relay:Stun:Tcp:MaxConnectionsPerIp", $"must be at least 1 (was {stun.Tcp.MaxConnectionsPerIp})");
        Check(stun.Tcp.IdleTimeoutSeconds >= 1, "Relay:Stun:Tcp:IdleTimeoutSeconds", $"must be at least 1 (was {stun.Tcp.IdleTimeoutSeconds})");

        ValidateAddresses(stun.ListenAddresses, "Relay:Stun:ListenAddresses", errors);
        ValidateAddresses(http.ListenAddresses, "Relay:Http:ListenAddresses", errors);

        if (!string.IsNullOrWhiteSpace(stun.AlternateAddress))
        {
            if (!IPAddress.TryParse(stun.AlternateAddress, out var alternate))
            {
                errors.Add($"Relay:Stun:AlternateAddress: '{stun.AlternateAddress}' is not an IP address");
                return;
            }

            Check(stun.EffectiveAlternatePort != stun.Port && IsPort(stun.EffectiveAlternatePort), "Relay:Stun:AlternatePort", $"must be a port other than Relay:Stun:Port (resolved to {stun.EffectiveAlternatePort})");
            var primary = stun.ListenAddresses
                .Select(static text => IPAddress.TryParse(text, out var address) ? address : null)
                .FirstOrDefault(address => address is not null && address.AddressFamily == alternate.AddressFamily);

            // RFC 5780 needs to know which address a request arrived on; a wildcard socket cannot say.
            Check(primary is not null && !primary.Equals(IPAddress.Any) && !primary.Equals(IPAddress.IPv6Any), "Relay:Stun:AlternateAddress",
                $"needs Relay:Stun:ListenAddresses to name a specific primary {(alternate.AddressFamily == AddressFamily.InterNetwork ? "IPv4" : "IPv6")} address (RFC 5780 binds primary and alternate addresses separately)");
            Check(primary is null || !primary.Equals(alternate), "Relay:Stun:AlternateAddress", "must differ from the primary listen address");
        }
    }

    private static void ValidateMqtt(MqttOptions mqtt, HttpOptions http, StunOptions stun, List<string> errors)
    {
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"Relay:Mqtt:{key}: {problem}");
            }
        }

        if (!mqtt.Enabled)
        {
            return;
        }

        static bool IsPort(int port) => port is >= 1 and <= 65535;
        Check(IsPort(mqtt.Port), "Port", $"must be a port between 1 and 65535 (was {mqtt.Port})");
        Check(IsPort(mqtt.TlsPort), "TlsPort", $"must be a port between 1 and 65535 (was {mqtt.TlsPort})");
        Check(mqtt.TlsPort != mqtt.Port, "TlsPort", $"must differ from Relay:Mqtt:Port (both are {mqtt.Port})");
        Check(mqtt.Port != http.Port && mqtt.TlsPort != http.Port, "Port", $"must differ from Relay:Http:Port ({http.Port}); MQTT over WebSocket is served on the HTTP port at /mqtt");
        Check(mqtt.Port != stun.Port && mqtt.Port != stun.TlsPort && mqtt.TlsPort != stun.Port && mqtt.TlsPort != stun.TlsPort, "Port", "must differ from the STUN ports");
        Check(mqtt.TcpTransport is "Sockets" or "Kestrel", "TcpTransport", $"must be Sockets or Kestrel (was '{mqtt.TcpTransport}')");
        Check(mqtt.ClientCertificateMode is "None" or "Optional" or "Required", "ClientCertificateMode", $"must be None, Optional or Required (was '{mqtt.ClientCertificateMode}')");
        Check(string.IsNullOrWhiteSpace(mqtt.ClientCertificateAuthorityPath) || File.Exists(mqtt.ClientCertificateAuthorityPath), "ClientCertificateAuthorityPath", $"file '{mqtt.ClientCertificateAuthorityPath}' does not exist");
        Check(mqtt.MaxPacketSize is >= 64 and <= 268_435_460, "MaxPacketSize", $"must be between 64 and 268435460 bytes (MQTT's largest packet; was {mqtt.MaxPacketSize})");
        Check(mqtt.MaxInflight is >= 1 and <= 65535, "MaxInflight", $"must be between 1 and 65535 (it is the Receive Maximum; was {mqtt.MaxInflight})");
        Check(mqtt.MaxQueuedMessages >= 1, "MaxQueuedMessages", $"must be at least 1 (was {mqtt.MaxQueuedMessages})");
        Check(mqtt.QueueDropPolicy is "DropOldest" or "DropNewest", "QueueDropPolicy", $"must be DropOldest or DropNewest (was '{mqtt.QueueDropPolicy}')");
        Check(mqtt.MaxConnectionsPerIp >= 1, "MaxConnectionsPerIp", $"must be at least 1 (was {mqtt.MaxConnectionsPerIp})");
        Check(mqtt.ConnectTimeoutSeconds >= 1, "ConnectTimeoutSeconds", $"must be at least 1 (was {mqtt.ConnectTimeoutSeconds})");
        Check(mqtt.MaxKeepAliveSeconds is >= 1 and <= 65535, "MaxKeepAliveSeconds", $"must be between 1 and 65535 (was {mqtt.MaxKeepAliveSeconds})");
        Check(mqtt.TopicAliasMaximum is >= 0 and <= 65535, "TopicAliasMaximum", $"must be between 0 and 65535 (was {mqtt.TopicAliasMaximum})");
        Check(mqtt.MaxRetainedMessages >= 0, "MaxRetainedMessages", $"must be 0 or more (was {mqtt.MaxRetainedMessages})");
        Check(mqtt.MaxTopicLevels is >= 1 and <= 65535, "MaxTopicLevels", $"must be between 1 and 65535 (was {mqtt.MaxTopicLevels})");
        Check(mqtt.MaxTopicLength is >= 1 and <= 65535, "MaxTopicLength", $"must be between 1 and 65535 bytes (was {mqtt.MaxTopicLength})");
        Check(mqtt.MaxSubscriptionsPerSession >= 1, "MaxSubscriptionsPerSession", $"must be at least 1 (was {mqtt.MaxSubscriptionsPerSession})");
        Check(mqtt.SysIntervalSeconds >= 0, "SysIntervalSeconds", $"must be 0 (off) or more (was {mqtt.SysIntervalSeconds})");
        Check(mqtt.SlowHashConcurrency >= 0, "SlowHashConcurrency", $"must be 0 (cores - 1) or more (was {mqtt.SlowHashConcurrency})");
        Check(mqtt.SlowHashMaxWaiting >= 0, "SlowHashMaxWaiting", $"must be 0 or more (was {mqtt.SlowHashMaxWaiting})");
        Check(mqtt.AuthFailuresPerMinutePerIp >= 1, "AuthFailuresPerMinutePerIp", $"must be at least 1 (was {mqtt.AuthFailuresPerMinutePerIp})");
        for (var i = 0; i < mqtt.Devices.Count; i++)
        {
            Check(!string.IsNullOrWhiteSpace(mqtt.Devices[i].Id) && !string.IsNullOrEmpty(mqtt.Devices[i].Secret), $"Devices:{i}", "needs Id and Secret");
        }

        for (var i = 0; i < mqtt.ServiceAccounts.Count; i++)
        {
            Check(!string.IsNullOrWhiteSpace(mqtt.ServiceAccounts[i].Name) && !string.IsNullOrEmpty(mqtt.ServiceAccounts[i].Password), $"ServiceAccounts:{i}", "needs Name and Password");
        }

        for (var i = 0; i < mqtt.Acl.Count; i++)
        {
            var rule = mqtt.Acl[i];
            Check(rule.Permission is "allow" or "deny", $"Acl:{i}:Permission", $"must be allow or deny (was '{rule.Permission}')");
            Check(rule.Action is "publish" or "subscribe" or "all", $"Acl:{i}:Action", $"must be publish, subscribe or all (was '{rule.Action}')");
            Check(!string.IsNullOrEmpty(rule.Topic), $"Acl:{i}:Topic", "must not be empty");
        }

        ValidateAddresses(mqtt.ListenAddresses, "Relay:Mqtt:ListenAddresses", errors);
    }

    private static void ValidateAddresses(IList<string> addresses, string key, List<string> errors)
    {
        for (var i = 0; i < addresses.Count; i++)
        {
            if (!IPAddress.TryParse(addresses[i], out _))
            {
                errors.Add($"{key}:{i}: '{addresses[i]}' is not an IP address");
            }
        }
    }

    private static X509Certificate2? LoadCertificate(TlsOptions tls, List<string> errors)
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
        catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or ArgumentException or IOException)
        {
            errors.Add($"Relay:Tls:CertificatePath/KeyPath: cannot load the PEM certificate and key ({e.Message})");
            return null;
        }
    }
}

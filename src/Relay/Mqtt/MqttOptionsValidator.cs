using Microsoft.Extensions.Options;
using Relay.Rendezvous.Stun;
using Relay.Server.Hosting;
using Relay.Server.Mqtt.Identity;

namespace Relay.Server.Mqtt;

/// <summary>
/// Checks <c>Relay:Mqtt</c>: limits, ports (apart from the HTTP and STUN ports), ACL rules, service accounts
/// and the authentication hook. Every message starts with the full key.
/// </summary>
internal sealed class MqttOptionsValidator(IOptions<HttpOptions> http, IOptions<StunOptions> stun) : IValidateOptions<MqttOptions>
{
    private const string Section = MqttOptions.SectionName;

    public ValidateOptionsResult Validate(string? name, MqttOptions mqtt)
    {
        var errors = new List<string>();

        // Rules, accounts and the hook are compiled even when MQTT is off, as the stores that use them are registered.
        Collect(errors, () => MqttAclAuthorizer.Compile(mqtt));
        Collect(errors, () => MqttAuthenticator.Validate(mqtt));
        if (mqtt.Enabled)
        {
            ValidateEnabled(mqtt, errors);
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private void ValidateEnabled(MqttOptions mqtt, List<string> errors)
    {
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"{Section}:{key}: {problem}");
            }
        }

        static bool IsPort(int port) => ListenAddresses.IsPort(port);
        Check(IsPort(mqtt.Port), "Port", $"must be a port between 1 and 65535 (was {mqtt.Port})");
        Check(IsPort(mqtt.TlsPort), "TlsPort", $"must be a port between 1 and 65535 (was {mqtt.TlsPort})");
        Check(mqtt.TlsPort != mqtt.Port, "TlsPort", $"must differ from Relay:Mqtt:Port (both are {mqtt.Port})");
        if (http.TryGetValid(out var httpOptions))
        {
            Check(mqtt.Port != httpOptions.Port && mqtt.TlsPort != httpOptions.Port, "Port", $"must differ from Relay:Http:Port ({httpOptions.Port}); MQTT over WebSocket is served on the HTTP port at /mqtt");
        }

        if (stun.TryGetValid(out var stunOptions))
        {
            Check(mqtt.Port != stunOptions.Port && mqtt.Port != stunOptions.TlsPort && mqtt.TlsPort != stunOptions.Port && mqtt.TlsPort != stunOptions.TlsPort, "Port", "must differ from the STUN ports");
        }

        Defined(mqtt.TcpTransport, "TcpTransport", errors);
        Defined(mqtt.ClientCertificateMode, "ClientCertificateMode", errors);
        Defined(mqtt.QueueDropPolicy, "QueueDropPolicy", errors);
        if (mqtt.ClientCertificateMode != MqttClientCertificateMode.None)
        {
            // Required, and never the system store (review M8).
            MqttClientCertificateValidator.LoadAuthorities(mqtt.ClientCertificateAuthorityPath, errors);
        }
        else
        {
            Check(string.IsNullOrWhiteSpace(mqtt.ClientCertificateAuthorityPath) || File.Exists(mqtt.ClientCertificateAuthorityPath), "ClientCertificateAuthorityPath", $"file '{mqtt.ClientCertificateAuthorityPath}' does not exist");
        }
        Check(mqtt.MaxPacketSize is >= 64 and <= 268_435_460, "MaxPacketSize", $"must be between 64 and 268435460 bytes (MQTT's largest packet; was {mqtt.MaxPacketSize})");
        Check(mqtt.MaxPreConnectPacketBytes >= 64, "MaxPreConnectPacketBytes", $"must be at least 64 bytes (was {mqtt.MaxPreConnectPacketBytes}); Relay:Mqtt:MaxPacketSize caps it when smaller");
        Check(mqtt.MaxPendingOutputBytes >= mqtt.MaxPacketSize, "MaxPendingOutputBytes", $"must be at least Relay:Mqtt:MaxPacketSize ({mqtt.MaxPacketSize}) bytes, or one largest packet could never be sent (was {mqtt.MaxPendingOutputBytes})");
        Check(mqtt.MaxInflight is >= 1 and <= 65535, "MaxInflight", $"must be between 1 and 65535 (it is the Receive Maximum; was {mqtt.MaxInflight})");
        Check(mqtt.MaxQueuedMessages >= 1, "MaxQueuedMessages", $"must be at least 1 (was {mqtt.MaxQueuedMessages})");
        Check(mqtt.MaxConnectionsPerIp >= 1, "MaxConnectionsPerIp", $"must be at least 1 (was {mqtt.MaxConnectionsPerIp})");
        Check(mqtt.ConnectTimeoutSeconds >= 1, "ConnectTimeoutSeconds", $"must be at least 1 (was {mqtt.ConnectTimeoutSeconds})");
        Check(mqtt.MaxKeepAliveSeconds is >= 1 and <= 65535, "MaxKeepAliveSeconds", $"must be between 1 and 65535 (was {mqtt.MaxKeepAliveSeconds})");
        Check(mqtt.TopicAliasMaximum is >= 0 and <= 65535, "TopicAliasMaximum", $"must be between 0 and 65535 (was {mqtt.TopicAliasMaximum})");
        Check(mqtt.MaxRetainedMessages >= 0, "MaxRetainedMessages", $"must be 0 or more (was {mqtt.MaxRetainedMessages})");
        Check(mqtt.MaxRetainedBytes >= 0, "MaxRetainedBytes", $"must be 0 or more (was {mqtt.MaxRetainedBytes})");
        Check(mqtt.MaxRetainedPayloadBytes >= 1, "MaxRetainedPayloadBytes", $"must be at least 1 (was {mqtt.MaxRetainedPayloadBytes})");
        Check(mqtt.MaxRetainedMessagesPerClient >= 0, "MaxRetainedMessagesPerClient", $"must be 0 or more (was {mqtt.MaxRetainedMessagesPerClient})");
        Check(mqtt.MaxRetainedBytesPerClient >= 0, "MaxRetainedBytesPerClient", $"must be 0 or more (was {mqtt.MaxRetainedBytesPerClient})");
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

        ListenAddresses.Validate(mqtt.ListenAddresses, $"{Section}:ListenAddresses", errors);
    }

    // The binder takes any case of a name, but also a bare number ("7"), which names no value.
    private static void Defined<TEnum>(TEnum value, string key, List<string> errors)
        where TEnum : struct, Enum
    {
        if (!Enum.IsDefined(value))
        {
            errors.Add($"{Section}:{key}: must be {StrictBinder.Choices(typeof(TEnum))} (was '{value}')");
        }
    }

    // The compilers throw on the first problem, naming its key.
    private static void Collect(List<string> errors, Action compile)
    {
        try
        {
            compile();
        }
        catch (RelayConfigurationException e)
        {
            errors.Add(e.Message);
        }
    }
}

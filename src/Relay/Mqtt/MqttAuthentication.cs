using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Server.Mqtt;

// The authentication seam: what a CONNECT offers, and the verdict the engine maps to a CONNACK.

/// <summary>What a CONNECT carried that authentication may look at.</summary>
internal sealed record MqttAuthRequest(
    string ClientId,
    string? Username,
    ReadOnlyMemory<byte>? Password,
    IPEndPoint? RemoteEndPoint,
    X509Certificate2? ClientCertificate,
    byte ProtocolVersion);

/// <summary>Outcome of authentication, mapped by the engine to CONNACK codes.</summary>
internal enum MqttAuthOutcome
{
    /// <summary>Accepted; <see cref="MqttAuthResult.Identity"/> is set.</summary>
    Allow,

    /// <summary>Unknown user or wrong password: v3.1.1 0x04, v5 0x86.</summary>
    BadCredentials,

    /// <summary>Known but not allowed (e.g. client id differs from device id, anonymous off): v3.1.1 0x05, v5 0x87.</summary>
    NotAuthorized,

    /// <summary>Too many failed attempts from this IP: v3.1.1 0x05, v5 0x9F (Connection rate exceeded).</summary>
    RateLimited,

    /// <summary>The identity provider could not answer (hook down): v3.1.1 0x03, v5 0x88.</summary>
    Unavailable,

    /// <summary>Not checked now: the slow-hash pool is full (a reconnect storm). v3.1.1 0x03, v5 0x89 Server busy.</summary>
    Busy,
}

/// <summary>Result of <see cref="IMqttAuthenticator.AuthenticateAsync"/>.</summary>
internal readonly record struct MqttAuthResult(MqttAuthOutcome Outcome, MqttIdentity? Identity, string? Reason)
{
    public static MqttAuthResult Allowed(MqttIdentity identity) => new(MqttAuthOutcome.Allow, identity, null);

    public static MqttAuthResult Denied(MqttAuthOutcome outcome, string reason) => new(outcome, null, reason);
}

/// <summary>Decides whether a CONNECT is accepted. Implementations count and rate-limit failures per source IP.</summary>
internal interface IMqttAuthenticator
{
    ValueTask<MqttAuthResult> AuthenticateAsync(MqttAuthRequest request, CancellationToken cancellationToken);
}

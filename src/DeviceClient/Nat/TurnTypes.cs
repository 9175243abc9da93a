using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;

namespace Relay.DeviceClient.Nat;

/// <summary>How <see cref="TurnClient"/> reaches the TURN server (RFC 8656 §3.1).</summary>
public enum TurnTransport
{
    /// <summary>UDP, with RFC 8489 §6.2.1 retransmission.</summary>
    Udp = 0,

    /// <summary>TCP: STUN and ChannelData framed on one stream (RFC 8656 §3.1, §12.5); for networks that block UDP.</summary>
    Tcp,
}

/// <summary>Long-term credentials for a TURN server (RFC 8489 §9.2).</summary>
/// <param name="Username">USERNAME.</param>
/// <param name="Password">The password the long-term key is derived from.</param>
/// <param name="Realm">The expected REALM; null accepts whatever realm the server's challenge names.</param>
public sealed record TurnCredentials(string Username, string Password, string? Realm = null)
{
    /// <summary>
    /// Time-limited credentials from a shared secret (draft-uberti-behave-turn-rest-00 §2.2): username
    /// <c>expiry:user</c> (expiry in Unix seconds), password <c>base64(HMAC-SHA1(secret, username))</c>.
    /// </summary>
    /// <param name="sharedSecret">The secret the TURN server shares with the service minting credentials.</param>
    /// <param name="user">The user part; empty leaves only the timestamp.</param>
    /// <param name="expiresAt">When the server stops accepting the credentials.</param>
    /// <param name="realm">The expected REALM, or null.</param>
    public static TurnCredentials CreateTimeLimited(string sharedSecret, string user, DateTimeOffset expiresAt, string? realm = null)
    {
        ArgumentNullException.ThrowIfNull(sharedSecret);
        ArgumentNullException.ThrowIfNull(user);
        var expiry = expiresAt.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);
        var username = user.Length == 0 ? expiry : expiry + ":" + user;
#pragma warning disable CA5350 // draft-uberti-behave-turn-rest-00 §2.2 mandates HMAC-SHA1 for the REST password
        var mac = HMACSHA1.HashData(Encoding.UTF8.GetBytes(sharedSecret), Encoding.UTF8.GetBytes(username));
#pragma warning restore CA5350
        return new TurnCredentials(username, Convert.ToBase64String(mac), realm);
    }
}

/// <summary>Settings for <see cref="TurnClient"/>.</summary>
public sealed class TurnClientOptions
{
    /// <summary>Retransmission over UDP (RFC 8489 §6.2.1); over TCP its whole schedule is the one timeout (Ti).</summary>
    public StunClientOptions Retransmission { get; set; } = new();

    /// <summary>LIFETIME asked for in Allocate and automatic Refresh; null lets the server choose (RFC 8656 §3.2: 600 s).</summary>
    public TimeSpan? RequestedLifetime { get; set; }

    /// <summary>Clock for lifetimes, refresh and permission deadlines.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>How often deadlines are checked.</summary>
    public TimeSpan MaintenanceInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Allocation, permissions and channels are renewed when less than this is left of them.</summary>
    public TimeSpan RefreshMargin { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Peer datagrams buffered for <see cref="TurnClient.ReceiveAsync"/>; more are dropped and counted.</summary>
    public int ReceiveQueueCapacity { get; set; } = 256;

    /// <summary>How long disposal waits for the Refresh(0) that frees the allocation.</summary>
    public TimeSpan DisposeTimeout { get; set; } = TimeSpan.FromSeconds(2);
}

/// <summary>Application data a peer sent to the relayed address.</summary>
/// <param name="Peer">The peer's transport address, as the server reports it.</param>
/// <param name="Data">The payload; owned by the receiver.</param>
/// <param name="ViaChannel">True when it came as ChannelData, false for a Data indication.</param>
public readonly record struct TurnPeerData(IPEndPoint Peer, ReadOnlyMemory<byte> Data, bool ViaChannel);

/// <summary>The TURN server answered with an error response (RFC 8489 §14.8, RFC 8656 §19).</summary>
public sealed class TurnErrorException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TurnErrorException(int code, string reason)
        : base($"TURN error {code}: {reason}")
    {
        Code = code;
        Reason = reason;
    }

    /// <summary>The error code, e.g. 401, 403, 437, 486.</summary>
    public int Code { get; }

    /// <summary>The server's reason phrase.</summary>
    public string Reason { get; }
}

/// <summary>The TURN server broke the protocol: a malformed stream, or an answer missing what the RFC requires.</summary>
public sealed class TurnProtocolException(string message) : Exception(message);

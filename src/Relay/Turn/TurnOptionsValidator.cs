using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>
/// Checks <c>Relay:Turn</c> at startup. Every message starts with the full configuration key, index
/// included ("Relay:Turn:AllowedPeers:2: ..."), so an operator can find the line to fix.
/// </summary>
internal sealed class TurnOptionsValidator : IValidateOptions<TurnOptions>
{
    /// <summary>RFC 8656 §12: channel numbers are 0x4000 through 0x4FFF.</summary>
    public const int MaxChannelNumbers = 0x1000;

    private const string Section = TurnOptions.SectionName;

    /// <inheritdoc/>
    public ValidateOptionsResult Validate(string? name, TurnOptions options)
    {
        var errors = new List<string>();
        Validate(options, errors);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Appends one message per problem to <paramref name="errors"/>.</summary>
    public static void Validate(TurnOptions o, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(errors);

        ValidateRealm(o.Realm, errors);
        ValidateUsers(o.Users, errors);
        ValidateSecrets(o.SharedSecrets, errors);
        ValidateRanges(o.AllowedPeers, nameof(TurnOptions.AllowedPeers), errors);
        ValidateRanges(o.DeniedPeers, nameof(TurnOptions.DeniedPeers), errors);
        ValidateRelayAddresses(o, errors);

        // Ports below 1024 belong to system services; a relay range over them would let peers'
        // traffic be answered from, and permission checks be keyed on, well-known ports.
        AtLeast(o.RelayPortMin, 1024, nameof(TurnOptions.RelayPortMin), errors);
        AtMost(o.RelayPortMin, 65535, nameof(TurnOptions.RelayPortMin), errors);
        AtLeast(o.RelayPortMax, 1024, nameof(TurnOptions.RelayPortMax), errors);
        AtMost(o.RelayPortMax, 65535, nameof(TurnOptions.RelayPortMax), errors);
        if (o.RelayPortMax < o.RelayPortMin)
        {
            errors.Add(Format("{0}:RelayPortMax: {1} is below RelayPortMin ({2})", Section, o.RelayPortMax, o.RelayPortMin));
        }

        AtLeast(o.DefaultLifetimeSeconds, 1, nameof(TurnOptions.DefaultLifetimeSeconds), errors);
        AtLeast(o.MaxLifetimeSeconds, 1, nameof(TurnOptions.MaxLifetimeSeconds), errors);
        if (o.MaxLifetimeSeconds < o.DefaultLifetimeSeconds)
        {
            errors.Add(Format("{0}:MaxLifetimeSeconds: {1} is below DefaultLifetimeSeconds ({2})", Section, o.MaxLifetimeSeconds, o.DefaultLifetimeSeconds));
        }

        AtLeast(o.NonceLifetimeSeconds, 1, nameof(TurnOptions.NonceLifetimeSeconds), errors);
        AtLeast(o.MaxAllocationsPerUser, 1, nameof(TurnOptions.MaxAllocationsPerUser), errors);
        AtLeast(o.MaxAllocations, 1, nameof(TurnOptions.MaxAllocations), errors);
        AtLeast(o.MaxAllocationsPerIp, 1, nameof(TurnOptions.MaxAllocationsPerIp), errors);
        AtLeast(o.MaxPermissionsPerAllocation, 1, nameof(TurnOptions.MaxPermissionsPerAllocation), errors);
        AtLeast(o.MaxChannelsPerAllocation, 1, nameof(TurnOptions.MaxChannelsPerAllocation), errors);
        AtMost(o.MaxChannelsPerAllocation, MaxChannelNumbers, nameof(TurnOptions.MaxChannelsPerAllocation), errors);
        if (o.MaxBytesPerSecondPerAllocation < 0)
        {
            errors.Add(Format("{0}:MaxBytesPerSecondPerAllocation: {1} is negative (0 turns the cap off)", Section, o.MaxBytesPerSecondPerAllocation));
        }
    }

    /// <summary>
    /// Splits a <c>user:password</c> entry at the first ':' (passwords may contain ':'); both parts
    /// must be non-empty.
    /// </summary>
    public static bool TrySplitUser(string? entry, out string user, out string password)
    {
        var colon = entry is null ? -1 : entry.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || colon == entry!.Length - 1)
        {
            user = password = string.Empty;
            return false;
        }

        user = entry[..colon];
        password = entry[(colon + 1)..];
        return true;
    }

    private static void ValidateRealm(string? realm, List<string> errors)
    {
        if (string.IsNullOrWhiteSpace(realm))
        {
            errors.Add($"{Section}:Realm: must not be empty");
            return;
        }

        // RFC 8489 §14.9: REALM is quoted-string content of fewer than 128 characters; a '"' or a
        // control character would have to be escaped on the wire, and clients disagree on how.
        if (realm.Length >= 128)
        {
            errors.Add(Format("{0}:Realm: {1} characters; RFC 8489 §14.9 allows fewer than 128", Section, realm.Length));
        }

        if (realm.Any(c => char.IsControl(c) || c is '"' or '\\'))
        {
            errors.Add($"{Section}:Realm: must not contain control characters, '\"' or '\\'");
        }
    }

    private static void ValidateUsers(IList<string> users, List<string> errors)
    {
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < users.Count; i++)
        {
            if (!TrySplitUser(users[i], out var user, out _))
            {
                errors.Add(Format("{0}:Users:{1}: expected user:password", Section, i));
                continue;
            }

            // RFC 8489 §14.3: USERNAME is fewer than 509 bytes after OpaqueString.
            var prepared = StunCredentials.Prepare(user);
            if (Encoding.UTF8.GetByteCount(prepared) >= 509)
            {
                errors.Add(Format("{0}:Users:{1}: the user name is 509 bytes or longer (RFC 8489 §14.3)", Section, i));
            }

            if (!seen.TryAdd(prepared, i))
            {
                errors.Add(Format("{0}:Users:{1}: user '{2}' is already defined at Users:{3}", Section, i, user, seen[prepared]));
            }
        }
    }

    private static void ValidateSecrets(IList<string> secrets, List<string> errors)
    {
        if (secrets.Count > TurnCredentialStore.MaxSharedSecrets)
        {
            errors.Add(Format(
                "{0}:SharedSecrets: {1} secrets; at most {2} may be active at once (each costs an HMAC per authentication)",
                Section, secrets.Count, TurnCredentialStore.MaxSharedSecrets));
        }

        for (var i = 0; i < secrets.Count; i++)
        {
            if (string.IsNullOrEmpty(secrets[i]))
            {
                errors.Add(Format("{0}:SharedSecrets:{1}: must not be empty", Section, i));
            }
        }
    }

    private static void ValidateRanges(IList<string> ranges, string key, List<string> errors)
    {
        for (var i = 0; i < ranges.Count; i++)
        {
            if (!TurnPeerPolicy.TryParseCidr(ranges[i], out _))
            {
                errors.Add(Format("{0}:{1}:{2}: '{3}' is not a CIDR range", Section, key, i, ranges[i]));
            }
        }
    }

    private static void ValidateRelayAddresses(TurnOptions o, List<string> errors)
    {
        var ipv4 = -1;
        var ipv6 = -1;
        for (var i = 0; i < o.RelayAddresses.Count; i++)
        {
            var key = Format("{0}:RelayAddresses:{1}", Section, i);
            if (!TryParseUnicast(o.RelayAddresses[i], key, errors, out var address))
            {
                continue;
            }

            ref var first = ref address.AddressFamily == AddressFamily.InterNetwork ? ref ipv4 : ref ipv6;
            if (first >= 0)
            {
                errors.Add(Format("{0}: a second {1} address (the first is RelayAddresses:{2}); at most one IPv4 and one IPv6", key, address.AddressFamily == AddressFamily.InterNetwork ? "IPv4" : "IPv6", first));
            }
            else
            {
                first = i;
            }
        }

        if (!string.IsNullOrEmpty(o.ExternalAddress))
        {
            TryParseUnicast(o.ExternalAddress, $"{Section}:ExternalAddress", errors, out _);
        }
    }

    private static bool TryParseUnicast(string text, string key, List<string> errors, out IPAddress address)
    {
        // A relayed transport address is advertised to peers in XOR-RELAYED-ADDRESS (RFC 8656 §7.3),
        // so it has to be one address they can send to: not a wildcard, not multicast.
        // IPAddress.TryParse also takes inet_aton shorthands ("10" is 0.0.0.10); demand a dotted quad.
        if (!IPAddress.TryParse(text, out address!)
            || (address.AddressFamily == AddressFamily.InterNetwork && text.Count(c => c == '.') != 3))
        {
            errors.Add($"{key}: '{text}' is not an IP address");
            return false;
        }

        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)
            || (address.AddressFamily == AddressFamily.InterNetwork && address.GetAddressBytes()[0] >= 224)
            || address.IsIPv6Multicast)
        {
            errors.Add($"{key}: '{text}' is not a unicast address");
            return false;
        }

        return true;
    }

    private static void AtLeast(long value, long minimum, string key, List<string> errors)
    {
        if (value < minimum)
        {
            errors.Add(Format("{0}:{1}: {2} is below {3}", Section, key, value, minimum));
        }
    }

    private static void AtMost(long value, long maximum, string key, List<string> errors)
    {
        if (value > maximum)
        {
            errors.Add(Format("{0}:{1}: {2} is above {3}", Section, key, value, maximum));
        }
    }

    private static string Format(string format, params object?[] args) => string.Format(CultureInfo.InvariantCulture, format, args);
}

using System.Net;

namespace Relay.Server.Hosting;

/// <summary>The <c>ListenAddresses</c> lists every listener section has: empty means all addresses.</summary>
internal static class ListenAddresses
{
    /// <summary>Parsed addresses, or null meaning "all addresses". Validated at start, so parsing cannot fail here.</summary>
    public static IReadOnlyList<IPAddress>? Parse(IList<string> addresses)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        return addresses.Count == 0 ? null : addresses.Select(IPAddress.Parse).ToArray();
    }

    /// <summary>One <c>key:i: 'x' is not an IP address</c> line per entry that is not one.</summary>
    public static void Validate(IList<string> addresses, string key, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        ArgumentNullException.ThrowIfNull(errors);
        for (var i = 0; i < addresses.Count; i++)
        {
            if (!IPAddress.TryParse(addresses[i], out _))
            {
                errors.Add($"{key}:{i}: '{addresses[i]}' is not an IP address");
            }
        }
    }

    /// <summary>A TCP or UDP port number.</summary>
    public static bool IsPort(int port) => port is >= 1 and <= 65535;
}

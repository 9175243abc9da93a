using System.Collections.Concurrent;
using System.Net;

namespace Relay.Server.StunTurn;

/// <summary>Open connections per client IP address, refused past a limit (Relay:Stun:Tcp:MaxConnectionsPerIp).</summary>
internal sealed class ConnectionsPerIpLimiter(int maxPerIp)
{
    private readonly ConcurrentDictionary<IPAddress, int> _open = new();

    public int MaxPerIp { get; } = maxPerIp;

    /// <summary>Counts one more connection from <paramref name="ip"/>; false, and nothing counted, at the limit.</summary>
    public bool TryEnter(IPAddress ip)
    {
        while (true)
        {
            var current = _open.GetOrAdd(ip, 0);
            if (current >= MaxPerIp)
            {
                return false;
            }

            if (_open.TryUpdate(ip, current + 1, current))
            {
                return true;
            }
        }
    }

    /// <summary>A connection counted by <see cref="TryEnter"/> closed; an address with none left is forgotten.</summary>
    public void Leave(IPAddress ip)
    {
        while (_open.TryGetValue(ip, out var current))
        {
            if (current <= 1 ? _open.TryRemove(new KeyValuePair<IPAddress, int>(ip, current)) : _open.TryUpdate(ip, current - 1, current))
            {
                return;
            }
        }
    }
}

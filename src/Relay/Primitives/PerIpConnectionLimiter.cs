using System.Net;

namespace Relay.Server.Primitives;

/// <summary>
/// Open connections per client IP address, refused past a per-address maximum (STUN/TURN over TCP and
/// TLS, MQTT). Lock-free on a <see cref="KeyedCounter{TKey}"/>: an address has an entry only while it has
/// a connection open, so the table is bounded by the open connections, not by every address ever seen.
/// IPv4-mapped IPv6 addresses count as their IPv4 address, so a dual-stack socket cannot double a client's share.
/// </summary>
/// <remarks>
/// A refusal is counted in <see cref="Refused"/> every time; the owner's log line (a
/// <see cref="LoggerMessageAttribute"/> method with its own event id) is called at most once per
/// 10 s, because a client can open connections as fast as it likes.
/// </remarks>
internal sealed class PerIpConnectionLimiter
{
    private readonly KeyedCounter<IPAddress> _open = new();
    private readonly LogThrottle _logThrottle;
    private readonly Action<IPAddress, int> _logRefused;
    private long _refused;

    /// <param name="maxPerIp">Connections one address may hold open.</param>
    /// <param name="time">The clock of the log throttle.</param>
    /// <param name="logRefused">Writes the owner's refusal line: the address and the limit.</param>
    public PerIpConnectionLimiter(int maxPerIp, TimeProvider time, Action<IPAddress, int> logRefused)
    {
        ArgumentNullException.ThrowIfNull(logRefused);
        MaxPerIp = maxPerIp;
        _logThrottle = new LogThrottle(1, TimeSpan.FromSeconds(10), time);
        _logRefused = logRefused;
    }

    public int MaxPerIp { get; }

    /// <summary>Addresses with at least one connection open.</summary>
    public int Addresses => _open.Keys;

    /// <summary>Connections refused so far.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Connections <paramref name="address"/> holds open.</summary>
    public int this[IPAddress address] => _open[Key(address)];

    /// <summary>
    /// Counts one more connection from <paramref name="address"/>; false, nothing counted, when it already
    /// holds <see cref="MaxPerIp"/> (the refusal is counted and, throttled, logged). A true must be paired
    /// with one <see cref="Leave"/>.
    /// </summary>
    public bool TryEnter(IPAddress address)
    {
        var key = Key(address);
        if (_open.TryEnter(key, MaxPerIp))
        {
            return true;
        }

        // The lines held back are not counted in the next one: the owner's metric has every refusal.
        Interlocked.Increment(ref _refused);
        if (_logThrottle.TryEnter(0, out _))
        {
            _logRefused(key, MaxPerIp);
        }

        return false;
    }

    /// <summary>A connection counted by <see cref="TryEnter"/> closed; an address with none left is forgotten.</summary>
    public void Leave(IPAddress address) => _open.Leave(Key(address));

    private static IPAddress Key(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}

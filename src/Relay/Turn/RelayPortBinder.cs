using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Relay.Rendezvous.Stun;
using Relay.Server.Hosting;

namespace Relay.Server.Turn;

/// <summary>
/// Binds relay sockets: UDP ones on random ports of Relay:Turn:RelayPortMin-RelayPortMax (RFC 8656 §7.2
/// asks for unpredictable ports), even ports and even/odd pairs for EVEN-PORT, and the listeners of
/// RFC 6062 TCP allocations. Knows the relay address of each family and the one advertised.
/// </summary>
internal sealed class RelayPortBinder
{
    private const int BindAttempts = 64;
    private const int TcpListenBacklog = 16;

    private readonly int _portMin;
    private readonly int _portMax;
    private readonly ILogger _logger;

    public RelayPortBinder(TurnOptions options, StunOptions stun, ILogger<RelayPortBinder> logger)
    {
        _portMin = options.RelayPortMin;
        _portMax = options.RelayPortMax;
        _logger = logger;
        (RelayIPv4, RelayIPv6) = ResolveRelayAddresses(options, stun);
        AdvertisedIPv4 = RelayIPv4;
        if (options.ExternalAddress is { Length: > 0 } external && IPAddress.TryParse(external, out var externalAddress) && externalAddress.AddressFamily == AddressFamily.InterNetwork)
        {
            AdvertisedIPv4 = externalAddress;
        }
    }

    /// <summary>Where IPv4 relay sockets are bound; null when the relay has no IPv4 address.</summary>
    public IPAddress? RelayIPv4 { get; }

    /// <summary>Where IPv6 relay sockets are bound; null when the relay has no IPv6 address.</summary>
    public IPAddress? RelayIPv6 { get; }

    /// <summary>The IPv4 address put in XOR-RELAYED-ADDRESS: Relay:Turn:ExternalAddress behind a 1:1 NAT, else <see cref="RelayIPv4"/>.</summary>
    public IPAddress? AdvertisedIPv4 { get; }

    /// <summary>Makes the datagrams a relay socket sends leave with DF set (DONT-FRAGMENT, RFC 8656 §14.8).</summary>
    public static void SetDontFragment(Socket socket)
    {
        if (socket.AddressFamily == AddressFamily.InterNetwork)
        {
            // IP_MTU_DISCOVER = IP_PMTUDISC_DO on Linux.
            socket.DontFragment = true;
        }
        else
        {
            // IPPROTO_IPV6, IPV6_DONTFRAG.
            socket.SetRawSocketOption(41, 62, [1, 0, 0, 0]);
        }
    }

    /// <summary>A TCP socket that may share the relayed transport address with its allocation's listener.</summary>
    public static Socket CreateTcpRelaySocket(AddressFamily family)
    {
        // RFC 6062 §5.2: connections to peers come from the relayed transport address, which the
        // listener holds; SO_REUSEADDR plus SO_REUSEPORT let both bind it.
        var socket = new Socket(family, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        socket.SetRawSocketOption(1, 15, [1, 0, 0, 0]);
        return socket;
    }

    /// <summary>
    /// Binds a UDP relay socket on a random port of the range; <paramref name="evenPort"/> for EVEN-PORT,
    /// and with <paramref name="reserveNext"/> the odd port above it too, into <paramref name="reserved"/>.
    /// Null when no port (pair) is free.
    /// </summary>
    public Socket? BindUdp(IPAddress address, bool evenPort, bool reserveNext, out Socket? reserved)
    {
        reserved = null;
        for (var attempt = 0; attempt < BindAttempts; attempt++)
        {
            var port = Random.Shared.Next(_portMin, _portMax + 1);
            if (evenPort)
            {
                port &= ~1;
                if (port < _portMin)
                {
                    port += 2;
                }

                if (port > _portMax || (reserveNext && port + 1 > _portMax))
                {
                    continue;
                }
            }

            var socket = TryBindUdp(address, port);
            if (socket is null)
            {
                continue;
            }

            if (reserveNext)
            {
                reserved = TryBindUdp(address, port + 1);
                if (reserved is null)
                {
                    socket.Dispose();
                    continue;
                }
            }

            return socket;
        }

        return null;
    }

    /// <summary>The listening socket of an RFC 6062 allocation; outgoing Connects bind the same address and port.</summary>
    public Socket? BindTcpListener(IPAddress address)
    {
        for (var attempt = 0; attempt < BindAttempts; attempt++)
        {
            var port = Random.Shared.Next(_portMin, _portMax + 1);
            var socket = CreateTcpRelaySocket(address.AddressFamily);
            try
            {
                socket.Bind(new IPEndPoint(address, port));
                socket.Listen(TcpListenBacklog);
                return socket;
            }
            catch (SocketException e)
            {
                socket.Dispose();
                if (e.SocketErrorCode != SocketError.AddressAlreadyInUse)
                {
                    TurnLog.LogRelayBindFailed(_logger, new IPEndPoint(address, port), e.SocketErrorCode);
                    return null;
                }
            }
        }

        return null;
    }

    private Socket? TryBindUdp(IPAddress address, int port)
    {
        var socket = new Socket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.Bind(new IPEndPoint(address, port));
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            if (e.SocketErrorCode != SocketError.AddressAlreadyInUse)
            {
                // Not a busy port but an unusable address (e.g. Relay:Turn:RelayAddresses names one this
                // host does not have): the client gets 508 and the operator a line naming the key.
                TurnLog.LogRelayBindFailed(_logger, new IPEndPoint(address, port), e.SocketErrorCode);
            }

            return null;
        }
    }

    /// <summary>
    /// The relay address of each family: configured, else the specific STUN listen address, else the
    /// host's first non-loopback address, else loopback (a laptop with no network still works).
    /// </summary>
    private static (IPAddress? V4, IPAddress? V6) ResolveRelayAddresses(TurnOptions options, StunOptions stun)
    {
        IReadOnlyList<IPAddress> configured = ListenAddresses.Parse(options.RelayAddresses) ?? [];
        var listen = (ListenAddresses.Parse(stun.ListenAddresses) ?? []).Where(static a => !a.Equals(IPAddress.Any) && !a.Equals(IPAddress.IPv6Any)).ToArray();
        IPAddress[] host = [];
        try
        {
            host = NetworkInterface.GetAllNetworkInterfaces()
                .Where(static nic => nic.OperationalStatus == OperationalStatus.Up)
                .SelectMany(static nic => nic.GetIPProperties().UnicastAddresses.Select(static u => u.Address))
                .Where(static a => !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal)
                .ToArray();
        }
        catch (NetworkInformationException)
        {
        }

        IPAddress? Pick(AddressFamily family, IPAddress loopback)
        {
            if (configured.Count > 0)
            {
                return configured.FirstOrDefault(a => a.AddressFamily == family);
            }

            return listen.FirstOrDefault(a => a.AddressFamily == family)
                ?? (listen.Length > 0 ? null : host.FirstOrDefault(a => a.AddressFamily == family))
                ?? (listen.Length > 0 || !Socket.OSSupportsIPv6 && family == AddressFamily.InterNetworkV6 ? null : loopback);
        }

        return (Pick(AddressFamily.InterNetwork, IPAddress.Loopback), Pick(AddressFamily.InterNetworkV6, IPAddress.IPv6Loopback));
    }
}

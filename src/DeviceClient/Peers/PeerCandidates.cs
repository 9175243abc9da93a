using System.Globalization;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Rendezvous;

namespace Relay.DeviceClient.Peers;

/// <summary>Where a session gathers its server-reflexive and relayed candidates (from <c>turn-credentials</c>).</summary>
internal sealed record PeerServers(IPEndPoint? Stun, IPEndPoint? TurnUdp, IPEndPoint? TurnTcp, TurnCredentials? Credentials);

/// <summary>One session's local side: its UDP socket, its TURN allocation (or none) and the candidates to send.</summary>
internal sealed class PeerLocal(Socket socket, TurnClient? turn, IReadOnlyList<RendezvousCandidate> candidates) : IAsyncDisposable
{
    public Socket Socket { get; } = socket;

    public TurnClient? Turn { get; } = turn;

    public IReadOnlyList<RendezvousCandidate> Candidates { get; } = candidates;

    public async ValueTask DisposeAsync()
    {
        Socket.Dispose();
        if (Turn is not null)
        {
            await Turn.DisposeAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>Candidate gathering (RFC 8445 §5.1.1) and the servers named by RFC 7065 URIs.</summary>
internal static class PeerCandidates
{
    /// <summary>RFC 8445 §5.1.2.1: priority = 2^24 × type preference + 2^8 × local preference + (256 − component).</summary>
    public static uint Priority(string type, int localIndex)
    {
        uint typePreference = type switch
        {
            "host" => 126,
            "prflx" => 110,
            "srflx" => 100,
            _ => 0,
        };
        return (typePreference << 24) + ((uint)(65535 - Math.Clamp(localIndex, 0, 65535)) << 8) + 255;
    }

    /// <summary>Gathers host, server-reflexive and relayed candidates for one session socket.</summary>
    public static async Task<PeerLocal> GatherAsync(PeerOptions options, PeerServers servers, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        TurnClient? turn = null;
        try
        {
            socket.Bind(new IPEndPoint(options.LocalAddress ?? IPAddress.Any, 0));
            var local = (IPEndPoint)socket.LocalEndPoint!;
            List<RendezvousCandidate> candidates = [];
            if (options.UseHost)
            {
                foreach (var address in HostAddresses(local.Address).Take(8))
                {
                    candidates.Add(new RendezvousCandidate("host", address.ToString(), local.Port, Priority("host", candidates.Count)));
                }
            }

            if (servers.Stun is not null && options.PathPolicy != PeerPathPolicy.RelayOnly)
            {
                try
                {
                    // The same socket: the mapping learnt is the one checks and data will use.
                    var binding = await StunClient.BindingAsync(socket, servers.Stun, false, false, options.ServerRetransmission, cancellationToken).ConfigureAwait(false);
                    var mapped = binding.MappedAddress;
                    if (!candidates.Any(c => c.Address == mapped.Address.ToString() && c.Port == mapped.Port))
                    {
                        candidates.Add(new RendezvousCandidate("srflx", mapped.Address.ToString(), mapped.Port, Priority("srflx", 0)));
                    }
                }
                catch (Exception e) when (e is TimeoutException or StunErrorResponseException or SocketException)
                {
                    // No server-reflexive candidate: host and relay may still do.
                }
            }

            if (options.UseTurn && servers.Credentials is not null && options.PathPolicy != PeerPathPolicy.DirectOnly)
            {
                turn = await AllocateAsync(options, servers, cancellationToken).ConfigureAwait(false);
                if (turn is not null)
                {
                    candidates.Add(new RendezvousCandidate("relay", turn.RelayedAddress.Address.ToString(), turn.RelayedAddress.Port, Priority("relay", 0)));
                }
            }

            return new PeerLocal(socket, turn, candidates);
        }
        catch
        {
            socket.Dispose();
            if (turn is not null)
            {
                await turn.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>UDP first; TCP when UDP gets no answer (a network that blocks UDP), unless forced.</summary>
    private static async Task<TurnClient?> AllocateAsync(PeerOptions options, PeerServers servers, CancellationToken cancellationToken)
    {
        var turnOptions = new TurnClientOptions { Retransmission = options.ServerRetransmission };
        TurnTransport[] order = options.ForceTurnTransport is { } forced ? [forced] : [TurnTransport.Udp, TurnTransport.Tcp];
        foreach (var transport in order)
        {
            var server = transport == TurnTransport.Udp ? servers.TurnUdp : servers.TurnTcp ?? servers.TurnUdp;
            if (server is null)
            {
                continue;
            }

            try
            {
                return await TurnClient.AllocateAsync(server, transport, servers.Credentials!, turnOptions, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is TimeoutException or SocketException or IOException or TurnProtocolException)
            {
                // Try the next transport.
            }
        }

        return null;
    }

    private static IEnumerable<IPAddress> HostAddresses(IPAddress bound)
    {
        if (!bound.Equals(IPAddress.Any))
        {
            yield return bound;
            yield break;
        }

        foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
        {
            if (nic.OperationalStatus != OperationalStatus.Up || nic.NetworkInterfaceType == NetworkInterfaceType.Loopback)
            {
                continue;
            }

            foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
            {
                if (unicast.Address.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(unicast.Address))
                {
                    yield return unicast.Address;
                }
            }
        }
    }

    /// <summary>
    /// The servers in <c>turn-credentials</c> URIs (RFC 7065 §3.1 turn:, RFC 7064 §3.1 stun:):
    /// <c>turn:host:port?transport=udp|tcp</c>, <c>stun:host:port</c>. Names are resolved to IPv4.
    /// </summary>
    public static async Task<PeerServers> ResolveAsync(RendezvousTurnCredentials turn, CancellationToken cancellationToken)
    {
        IPEndPoint? stun = null, udp = null, tcp = null;
        foreach (var uri in turn.Uris)
        {
            var colon = uri.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                continue;
            }

            var scheme = uri[..colon];
            var rest = uri[(colon + 1)..];
            var query = rest.IndexOf('?', StringComparison.Ordinal);
            var transport = query >= 0 && rest[query..].Contains("transport=tcp", StringComparison.OrdinalIgnoreCase) ? "tcp" : "udp";
            var hostPort = query >= 0 ? rest[..query] : rest;
            var portAt = hostPort.LastIndexOf(':');
            var host = portAt > 0 ? hostPort[..portAt] : hostPort;
            var port = portAt > 0 && int.TryParse(hostPort[(portAt + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var p) ? p : 3478;
            var address = await ResolveHostAsync(host.Trim('[', ']'), cancellationToken).ConfigureAwait(false);
            if (address is null)
            {
                continue;
            }

            var endpoint = new IPEndPoint(address, port);
            switch (scheme)
            {
                case "stun":
                    stun ??= endpoint;
                    break;
                case "turn" when transport == "tcp":
                    tcp ??= endpoint;
                    break;
                case "turn":
                    udp ??= endpoint;
                    break;
            }
        }

        // Our server answers Binding on its TURN port too.
        stun ??= udp;
        return new PeerServers(stun, udp, tcp, new TurnCredentials(turn.Username, turn.Password));
    }

    private static async Task<IPAddress?> ResolveHostAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host, out var literal))
        {
            return literal;
        }

        try
        {
            var addresses = await Dns.GetHostAddressesAsync(host, AddressFamily.InterNetwork, cancellationToken).ConfigureAwait(false);
            return addresses.FirstOrDefault();
        }
        catch (SocketException)
        {
            return null;
        }
    }
}

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

    // Happy eyeballs for TURN (RFC 8305 §5 in spirit): UDP gets this head start before TCP joins the race.
    private static readonly TimeSpan UdpHeadStart = TimeSpan.FromSeconds(1);

    /// <summary>Gathers host, server-reflexive and relayed candidates for one session socket.</summary>
    public static Task<PeerLocal> GatherAsync(PeerOptions options, PeerServers servers, CancellationToken cancellationToken) =>
        GatherAsync(options, servers, localNat: null, TimeProvider.System, cancellationToken);

    /// <summary>
    /// Gathers host, server-reflexive and relayed candidates for one session socket. The server-reflexive
    /// and the relayed candidate are gathered at once; <paramref name="localNat"/> = <c>UdpBlocked</c>
    /// (this device's classification, when known) skips every UDP request to the server.
    /// </summary>
    public static async Task<PeerLocal> GatherAsync(PeerOptions options, PeerServers servers, string? localNat, TimeProvider time, CancellationToken cancellationToken)
    {
        var udpBlocked = string.Equals(localNat, nameof(NatType.UdpBlocked), StringComparison.Ordinal);
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        using var stopReflexive = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var reflexive = Task.FromResult<IPEndPoint?>(null);
        var relay = Task.FromResult(new Allocation(null, UdpSilent: false));
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

            if (servers.Stun is not null && options.PathPolicy != PeerPathPolicy.RelayOnly && !udpBlocked)
            {
                reflexive = ReflexiveAsync(socket, servers.Stun, options, stopReflexive.Token, cancellationToken);
            }

            if (options.UseTurn && servers.Credentials is not null && options.PathPolicy != PeerPathPolicy.DirectOnly)
            {
                relay = AllocateAsync(options, servers, udpBlocked, time, cancellationToken);
            }

            var allocation = await relay.ConfigureAwait(false);
            turn = allocation.Turn;

            // TCP answered while UDP to the server stayed silent through its head start and more: UDP is blocked
            // here, so the Binding request (same server, same start) would only wait out its schedule.
            if (allocation.UdpSilent)
            {
                await stopReflexive.CancelAsync().ConfigureAwait(false);
            }

            var mapped = await reflexive.ConfigureAwait(false);
            if (mapped is not null && !candidates.Any(c => c.Address == mapped.Address.ToString() && c.Port == mapped.Port))
            {
                candidates.Add(new RendezvousCandidate("srflx", mapped.Address.ToString(), mapped.Port, Priority("srflx", 0)));
            }

            if (turn is not null)
            {
                candidates.Add(new RendezvousCandidate("relay", turn.RelayedAddress.Address.ToString(), turn.RelayedAddress.Port, Priority("relay", 0)));
            }

            return new PeerLocal(socket, turn, candidates);
        }
        catch
        {
            await stopReflexive.CancelAsync().ConfigureAwait(false);
            socket.Dispose();
            await ((Task)reflexive).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (turn is not null)
            {
                await turn.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    // The same socket: the mapping learnt is the one checks and data will use. No answer means no
    // server-reflexive candidate; host and relay may still do.
    private static async Task<IPEndPoint?> ReflexiveAsync(Socket socket, IPEndPoint server, PeerOptions options, CancellationToken stop, CancellationToken cancellationToken)
    {
        try
        {
            var binding = await StunClient.BindingAsync(socket, server, false, false, options.ServerRetransmission, stop).ConfigureAwait(false);
            return binding.MappedAddress;
        }
        catch (Exception e) when (e is TimeoutException or StunErrorResponseException or SocketException
            || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            return null;
        }
    }

    /// <param name="Turn">The allocation, or null when neither transport got one.</param>
    /// <param name="UdpSilent">TCP won while UDP had not answered at all (still waiting, or timed out).</param>
    private sealed record Allocation(TurnClient? Turn, bool UdpSilent);

    /// <summary>
    /// UDP first; TCP joins after <see cref="UdpHeadStart"/> (at once when UDP is known to be blocked or
    /// fails fast), and the first allocation wins; the other attempt is cancelled and released.
    /// </summary>
    private static async Task<Allocation> AllocateAsync(PeerOptions options, PeerServers servers, bool udpBlocked, TimeProvider time, CancellationToken cancellationToken)
    {
        var turnOptions = new TurnClientOptions { Retransmission = options.ServerRetransmission };
        var credentials = servers.Credentials!;
        if (options.ForceTurnTransport is { } forced)
        {
            var server = forced == TurnTransport.Udp ? servers.TurnUdp : servers.TurnTcp ?? servers.TurnUdp;
            return new Allocation(server is null ? null : await QuietlyAsync(TurnClient.AllocateAsync(server, forced, credentials, turnOptions, cancellationToken)).ConfigureAwait(false), false);
        }

        using var race = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var udpServer = udpBlocked ? null : servers.TurnUdp;
        var tcpServer = servers.TurnTcp ?? servers.TurnUdp;
        var udp = udpServer is null ? null : TurnClient.AllocateAsync(udpServer, TurnTransport.Udp, credentials, turnOptions, race.Token);
        Task<TurnClient>? tcp = null;
        TurnClient? winner = null;
        try
        {
            if (udp is not null)
            {
                using var headStart = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var delay = Task.Delay(UdpHeadStart, time, headStart.Token);
                await Task.WhenAny(udp, delay).ConfigureAwait(false);
                await headStart.CancelAsync().ConfigureAwait(false);
                cancellationToken.ThrowIfCancellationRequested();
            }

            if (tcpServer is not null && (udp is null || !udp.IsCompletedSuccessfully))
            {
                tcp = TurnClient.AllocateAsync(tcpServer, TurnTransport.Tcp, credentials, turnOptions, race.Token);
            }

            List<Task<TurnClient>> pending = [.. new[] { udp, tcp }.OfType<Task<TurnClient>>()];
            while (winner is null && pending.Count > 0)
            {
                var done = await Task.WhenAny(pending).ConfigureAwait(false);
                pending.Remove(done);
                winner = await QuietlyAsync(done).ConfigureAwait(false);
            }

            var udpSilent = winner?.Transport == TurnTransport.Tcp && udp is not null
                && (!udp.IsCompleted || udp.Exception?.InnerException is TimeoutException);
            return new Allocation(winner, udpSilent);
        }
        finally
        {
            await race.CancelAsync().ConfigureAwait(false);
            foreach (var attempt in new[] { udp, tcp })
            {
                if (attempt is not null && (!attempt.IsCompletedSuccessfully || attempt.Result != winner))
                {
                    _ = ReleaseAsync(attempt);
                }
            }
        }
    }

    private static async Task<TurnClient?> QuietlyAsync(Task<TurnClient> attempt)
    {
        try
        {
            return await attempt.ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or SocketException or IOException or TurnProtocolException)
        {
            return null; // the other transport may still do
        }
    }

    // A losing attempt: cancelled, it disposes itself; one that won the race to completion anyway is freed here.
    private static async Task ReleaseAsync(Task<TurnClient> attempt)
    {
        await ((Task)attempt).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        if (attempt.IsCompletedSuccessfully)
        {
            await attempt.Result.DisposeAsync().ConfigureAwait(false);
        }
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

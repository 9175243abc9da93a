using System.Net;
using System.Net.Sockets;

namespace Relay.DeviceClient.Nat;

/// <summary>How a NAT maps one internal endpoint to external ones (RFC 5780 §4.3, RFC 4787 §4.1).</summary>
public enum NatMappingBehavior
{
    /// <summary>The server does not support RFC 5780 (no OTHER-ADDRESS), so the test could not run.</summary>
    Unsupported = 0,

    /// <summary>No answer at all: UDP to the server is blocked.</summary>
    UdpBlocked,

    /// <summary>One mapping for every destination: hole punching works.</summary>
    EndpointIndependent,

    /// <summary>A new mapping per destination address.</summary>
    AddressDependent,

    /// <summary>A new mapping per destination address and port ("symmetric").</summary>
    AddressAndPortDependent,
}

/// <summary>Which inbound packets a NAT or firewall lets through to a mapping (RFC 5780 §4.4, RFC 4787 §5).</summary>
public enum NatFilteringBehavior
{
    /// <summary>The server does not support RFC 5780 (no OTHER-ADDRESS), so the test could not run.</summary>
    Unsupported = 0,

    /// <summary>No answer at all: UDP to the server is blocked.</summary>
    UdpBlocked,

    /// <summary>Any external endpoint may send to the mapping.</summary>
    EndpointIndependent,

    /// <summary>Only addresses this host has sent to may send back.</summary>
    AddressDependent,

    /// <summary>Only address-and-port pairs this host has sent to may send back.</summary>
    AddressAndPortDependent,
}

/// <summary>
/// A one-word summary of <see cref="NatBehavior"/> in the classic (RFC 3489) vocabulary, for choosing a
/// connection strategy: direct, hole punching, or relay.
/// </summary>
public enum NatType
{
    /// <summary>The server cannot tell (no RFC 5780 support).</summary>
    Unknown = 0,

    /// <summary>No UDP answer: use TURN over TCP or TLS.</summary>
    UdpBlocked,

    /// <summary>No NAT and no inbound filtering: reachable directly.</summary>
    Open,

    /// <summary>No NAT, but a firewall filters inbound traffic (hole punching works as for a cone NAT).</summary>
    FirewalledOpen,

    /// <summary>Endpoint-independent mapping and filtering.</summary>
    FullCone,

    /// <summary>Endpoint-independent mapping, address-dependent filtering.</summary>
    AddressRestricted,

    /// <summary>Endpoint-independent mapping, address-and-port-dependent filtering: the common "easy" NAT.</summary>
    PortRestricted,

    /// <summary>Mapping depends on the destination: hole punching rarely works, plan on a relay.</summary>
    Symmetric,
}

/// <summary>The outcome of RFC 5780 NAT behaviour discovery.</summary>
/// <param name="Mapping">Mapping behaviour (RFC 5780 §4.3).</param>
/// <param name="Filtering">Filtering behaviour (RFC 5780 §4.4).</param>
/// <param name="MappedAddress">The server-reflexive address from the first test; null when UDP is blocked.</param>
/// <param name="LocalAddress">The local endpoint the tests were run from.</param>
/// <param name="Type">The summary.</param>
public sealed record NatBehavior(NatMappingBehavior Mapping, NatFilteringBehavior Filtering, IPEndPoint? MappedAddress, IPEndPoint LocalAddress, NatType Type)
{
    /// <summary>True when the server saw another address than the local one: some NAT translates.</summary>
    public bool IsBehindNat => MappedAddress is not null && !MappedAddress.Equals(LocalAddress);

    /// <summary>True when the mapping is the same towards every peer, the precondition for UDP hole punching.</summary>
    public bool SupportsHolePunching => Mapping == NatMappingBehavior.EndpointIndependent;
}

/// <summary>
/// NAT behaviour discovery (RFC 5780 §4): runs the mapping tests against a server that advertises
/// OTHER-ADDRESS from one UDP socket, so that every mapping test sees the same mapping, and the filtering
/// tests meanwhile from fresh sockets of their own.
/// </summary>
public static class NatBehaviorDiscovery
{
    // A filtering test is expected to go unanswered behind most NATs (RFC 5780 §4.4): silence is the result,
    // not a fault to retry through, so it gets at most 3 requests and a short last wait.
    private const int FilteringMaxRequests = 3;
    private const int FilteringLastWaitMultiplier = 4;

    /// <summary>Runs discovery from a new ephemeral socket bound to the local address that routes to the server.</summary>
    /// <remarks>
    /// The first test waits for the whole retransmission schedule of <paramref name="options"/> before
    /// concluding that UDP is blocked. The two filtering tests run at once, and one that gets no answer gives
    /// up after at most 3 requests (same initial RTO, last wait at most 4 RTOs), because silence is the answer.
    /// </remarks>
    public static Task<NatBehavior> DiscoverAsync(IPEndPoint server, StunClientOptions? options = null, CancellationToken cancellationToken = default) =>
        DiscoverAsync(server, options, typeKnown: null, cancellationToken);

    /// <summary>
    /// Runs discovery from <paramref name="socket"/>, which must be bound and not be read by anyone else
    /// meanwhile. Bind it to a specific address, so that "no NAT" can be recognised.
    /// </summary>
    public static Task<NatBehavior> DiscoverAsync(Socket socket, IPEndPoint server, StunClientOptions? options = null, CancellationToken cancellationToken = default) =>
        DiscoverAsync(socket, server, options, typeKnown: null, cancellationToken);

    /// <summary>As the public overload; <paramref name="typeKnown"/> is called once, as soon as the <see cref="NatType"/> is settled.</summary>
    internal static async Task<NatBehavior> DiscoverAsync(IPEndPoint server, StunClientOptions? options, Action<NatType>? typeKnown, CancellationToken cancellationToken)
    {
        using var socket = new Socket(server.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(LocalAddressTowards(server), 0));
        return await DiscoverAsync(socket, server, options, typeKnown, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// As the public overload; <paramref name="typeKnown"/> is called once, as soon as the <see cref="NatType"/>
    /// is settled: for a symmetric mapping right after the mapping tests (RFC 5780 §4.3), because no filtering
    /// outcome changes that summary, otherwise when the filtering tests end too.
    /// </summary>
    internal static async Task<NatBehavior> DiscoverAsync(Socket socket, IPEndPoint server, StunClientOptions? options, Action<NatType>? typeKnown, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(server);
        options ??= new StunClientOptions();
        var local = (IPEndPoint)socket.LocalEndPoint!;
        if (local.Address.Equals(IPAddress.Any) || local.Address.Equals(IPAddress.IPv6Any))
        {
            local = new IPEndPoint(LocalAddressTowards(server), local.Port);
        }

        // RFC 5780 §4.3 test I: a plain Binding request to the primary address.
        var first = await TryBindingAsync(socket, server, false, false, options, cancellationToken).ConfigureAwait(false);
        if (first is null)
        {
            return Settled(new NatBehavior(NatMappingBehavior.UdpBlocked, NatFilteringBehavior.UdpBlocked, null, local, NatType.UdpBlocked), typeKnown);
        }

        // RFC 5780 §4.3: "If OTHER-ADDRESS is not returned, the server does not support this usage and
        // this test cannot be run." A server whose other address shares the primary IP cannot test
        // address dependence either.
        var other = first.OtherAddress;
        if (other is null || other.Address.Equals(server.Address) || other.AddressFamily != server.AddressFamily)
        {
            return Settled(new NatBehavior(NatMappingBehavior.Unsupported, NatFilteringBehavior.Unsupported, first.MappedAddress, local, NatType.Unknown), typeKnown);
        }

        var behindNat = !first.MappedAddress.Equals(local);
        using var stopFiltering = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var filteringTask = DiscoverFilteringAsync(local.Address, server, options, stopFiltering.Token);
        NatMappingBehavior mapping;
        try
        {
            mapping = await DiscoverMappingAsync(socket, server, first, other, options, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await stopFiltering.CancelAsync().ConfigureAwait(false);
            await ((Task)filteringTask).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw;
        }

        // Any filtering answer (all three are possible) summarises a dependent mapping as Symmetric, so the
        // type is settled now; the filtering tests still finish for the full record.
        var reported = false;
        if (mapping is NatMappingBehavior.AddressDependent or NatMappingBehavior.AddressAndPortDependent)
        {
            typeKnown?.Invoke(NatType.Symmetric);
            reported = true;
        }

        var filtering = await filteringTask.ConfigureAwait(false);
        var behavior = new NatBehavior(mapping, filtering, first.MappedAddress, local, Summarize(mapping, filtering, behindNat));
        return reported ? behavior : Settled(behavior, typeKnown);
    }

    private static NatBehavior Settled(NatBehavior behavior, Action<NatType>? typeKnown)
    {
        typeKnown?.Invoke(behavior.Type);
        return behavior;
    }

    /// <summary>Maps the two behaviours onto the classic names.</summary>
    /// <param name="mapping">Mapping behaviour.</param>
    /// <param name="filtering">Filtering behaviour.</param>
    /// <param name="behindNat">False when the mapped address is the local one.</param>
    public static NatType Summarize(NatMappingBehavior mapping, NatFilteringBehavior filtering, bool behindNat) => (mapping, filtering, behindNat) switch
    {
        (NatMappingBehavior.UdpBlocked, _, _) or (_, NatFilteringBehavior.UdpBlocked, _) => NatType.UdpBlocked,
        (NatMappingBehavior.Unsupported, _, _) or (_, NatFilteringBehavior.Unsupported, _) => NatType.Unknown,
        (NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.EndpointIndependent, false) => NatType.Open,
        (NatMappingBehavior.EndpointIndependent, _, false) => NatType.FirewalledOpen,
        (NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.EndpointIndependent, _) => NatType.FullCone,
        (NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.AddressDependent, _) => NatType.AddressRestricted,
        (NatMappingBehavior.EndpointIndependent, _, _) => NatType.PortRestricted,
        _ => NatType.Symmetric,
    };

    private static async Task<NatMappingBehavior> DiscoverMappingAsync(
        Socket socket, IPEndPoint server, StunBindingResult first, IPEndPoint other, StunClientOptions options, CancellationToken cancellationToken)
    {
        // Test II: to the alternate IP and the primary port. An unanswered probe here (a lossy path) leaves
        // the mapping unknown rather than guessed.
        var second = await TryBindingAsync(socket, new IPEndPoint(other.Address, server.Port), false, false, options, cancellationToken).ConfigureAwait(false);
        if (second is null)
        {
            return NatMappingBehavior.Unsupported;
        }

        if (second.MappedAddress.Equals(first.MappedAddress))
        {
            return NatMappingBehavior.EndpointIndependent;
        }

        // Test III: to the alternate IP and alternate port; the same mapping as test II means only the address mattered.
        var third = await TryBindingAsync(socket, other, false, false, options, cancellationToken).ConfigureAwait(false);
        if (third is null)
        {
            return NatMappingBehavior.Unsupported;
        }

        return third.MappedAddress.Equals(second.MappedAddress) ? NatMappingBehavior.AddressDependent : NatMappingBehavior.AddressAndPortDependent;
    }

    /// <summary>
    /// RFC 5780 §4.4 tests II and III, at once, each from a fresh socket that has sent only that one request
    /// to the primary address. Sharing the mapping socket would be wrong as well as slow: the mapping tests
    /// sent to the alternate address, which opens an address-dependent filter to the very answers test II
    /// asks for. A fresh mapping is as good as the first one here, since only the filter is being tested.
    /// </summary>
    private static async Task<NatFilteringBehavior> DiscoverFilteringAsync(IPAddress local, IPEndPoint server, StunClientOptions options, CancellationToken cancellationToken)
    {
        var filteringOptions = new StunClientOptions
        {
            InitialRto = options.InitialRto,
            MaxRequests = Math.Clamp(options.MaxRequests, 1, FilteringMaxRequests),
            LastWaitMultiplier = Math.Clamp(options.LastWaitMultiplier, 1, FilteringLastWaitMultiplier),
            Software = options.Software,
        };
        using var both = new Socket(server.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        using var portOnly = new Socket(server.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        both.Bind(new IPEndPoint(local, 0));
        portOnly.Bind(new IPEndPoint(local, 0));

        // Test II: the answer comes from the other IP and port. Getting it means any endpoint may send in.
        var changeBoth = TryBindingAsync(both, server, true, true, filteringOptions, cancellationToken);

        // Test III: only the port changes.
        var changePort = TryBindingAsync(portOnly, server, false, true, filteringOptions, cancellationToken);
        await ((Task)Task.WhenAll(changeBoth, changePort)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        if (await changeBoth.ConfigureAwait(false) is not null)
        {
            return NatFilteringBehavior.EndpointIndependent;
        }

        return await changePort.ConfigureAwait(false) is not null
            ? NatFilteringBehavior.AddressDependent
            : NatFilteringBehavior.AddressAndPortDependent;
    }

    // Silence is a result in these tests, so a timeout becomes null rather than an exception.
    private static async Task<StunBindingResult?> TryBindingAsync(Socket socket, IPEndPoint target, bool changeIp, bool changePort, StunClientOptions? options, CancellationToken cancellationToken)
    {
        try
        {
            return await StunClient.BindingAsync(socket, target, changeIp, changePort, options, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return null;
        }
    }

    // The source address the kernel would pick for the server: connect() on UDP sends nothing.
    private static IPAddress LocalAddressTowards(IPEndPoint server)
    {
        using var probe = new Socket(server.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        probe.Connect(server);
        return ((IPEndPoint)probe.LocalEndPoint!).Address;
    }
}

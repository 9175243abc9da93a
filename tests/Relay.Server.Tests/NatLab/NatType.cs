namespace Relay.Server.Tests.Nat;

/// <summary>The NAT behaviours a lab router can take (RFC 4787 terms; ARCHITECTURE.md section 6).</summary>
public enum NatType
{
    /// <summary>Endpoint-independent mapping, address-and-port-dependent ("port-restricted") filtering.</summary>
    Easy,

    /// <summary>Endpoint-independent mapping and filtering: anyone may send to a mapping once it exists.</summary>
    FullCone,

    /// <summary>Endpoint-independent mapping, address-dependent filtering.</summary>
    AddressRestricted,

    /// <summary>Address-and-port-dependent mapping (a new external port per destination) and filtering.</summary>
    Symmetric,

    /// <summary>Like <see cref="Easy"/> for TCP, but every UDP datagram leaving the LAN is dropped.</summary>
    UdpBlocked,
}

/// <summary>One router and the client behind it: site n has WAN 198.18.0.(10+n), LAN 10.0.n.0/24.</summary>
/// <param name="Index">1-based position in the list the lab was created with.</param>
/// <param name="Type">How the router behaves.</param>
/// <param name="RouterNamespace">The router's network namespace (interfaces <c>wan</c> and <c>lan</c>).</param>
/// <param name="ClientNamespace">The client's network namespace (interface <c>eth0</c>, default route via the router).</param>
public sealed record NatSite(int Index, NatType Type, string RouterNamespace, string ClientNamespace)
{
    /// <summary>The router's public address: what peers see as the source of the client's traffic.</summary>
    public string WanAddress => $"198.18.0.{10 + Index}";

    /// <summary>The router's LAN address, the client's gateway.</summary>
    public string LanAddress => $"10.0.{Index}.1";

    /// <summary>The client's private address.</summary>
    public string ClientAddress => $"10.0.{Index}.2";
}

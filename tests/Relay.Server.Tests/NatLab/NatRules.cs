using System.Globalization;
using System.Text;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// The nftables ruleset of a lab router, per <see cref="NatType"/> (ARCHITECTURE.md section 6; docs/natlab.md
/// shows each). Every type shares: masquerade on <c>wan</c>, a forward chain that drops by default and
/// accepts <c>ct state established,related</c> and what leaves the LAN, and an input chain that drops by
/// default. The input chain matters: a router that accepted an unsolicited packet to a port could later
/// hand the client a different port (the port is then taken by the router's own conntrack entry).
/// Drops are counted in named counters (<c>input_drops</c>, <c>forward_drops</c>, <c>udp_drops</c>) so a
/// test can observe that a packet was dropped rather than infer it from silence.
/// </summary>
internal static class NatRules
{
    public const string Table = "lab";

    public static string For(NatSite site, int peerSetTimeoutSeconds)
    {
        var client = site.ClientAddress;
        var rules = new StringBuilder();
        rules.Append(CultureInfo.InvariantCulture, $$"""
            table ip {{Table}} {
              counter input_drops { }
              counter forward_drops { }
              counter udp_drops { }

            """);
        if (site.Type == NatType.AddressRestricted)
        {
            // Keyed by (peer address, client port): filtering belongs to one mapping, so contacting a peer
            // from one socket opens nothing for another socket of the same client.
            rules.Append(CultureInfo.InvariantCulture, $$"""
                  set peers { type ipv4_addr . inet_service; flags dynamic,timeout; timeout {{peerSetTimeoutSeconds}}s; }

                """);
        }

        rules.Append("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n");
        switch (site.Type)
        {
            case NatType.FullCone:
                // Every unsolicited UDP datagram to the WAN address goes to the client, same port: masquerade
                // keeps the client's source port, so this reaches whichever socket owns the mapping. UDP only:
                // a DNAT for TCP would revive a TCP path whose conntrack entry expired.
                rules.Append(CultureInfo.InvariantCulture, $"    iifname \"wan\" udp dport 1024-65535 dnat to {client}\n");
                break;
            case NatType.AddressRestricted:
                rules.Append(CultureInfo.InvariantCulture, $"    iifname \"wan\" ip saddr . udp dport @peers dnat to {client}\n");
                break;
        }

        rules.Append("  }\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");

        // Not "random" for the others: Linux then keeps the client's source port when it is free, which is
        // endpoint-independent mapping. random,fully-random draws a new port for every new destination.
        rules.Append(site.Type == NatType.Symmetric
            ? "    oifname \"wan\" masquerade random,fully-random\n"
            : "    oifname \"wan\" masquerade\n");
        rules.Append("""
              }
              chain forward {
                type filter hook forward priority filter; policy drop;
                ct state established,related accept

            """);
        if (site.Type == NatType.UdpBlocked)
        {
            rules.Append("    iifname \"lan\" meta l4proto udp counter name udp_drops drop\n");
        }

        if (site.Type == NatType.AddressRestricted)
        {
            rules.Append("    iifname \"lan\" oifname \"wan\" meta l4proto udp update @peers { ip daddr . udp sport }\n");
        }

        rules.Append("    iifname \"lan\" oifname \"wan\" accept\n");
        if (site.Type is NatType.FullCone or NatType.AddressRestricted)
        {
            rules.Append("    iifname \"wan\" oifname \"lan\" ct status dnat accept\n");
        }

        rules.Append("""
                counter name forward_drops drop
              }
              chain input {
                type filter hook input priority filter; policy drop;
                iifname "lo" accept
                counter name input_drops drop
              }
            }

            """);
        return rules.ToString();
    }
}

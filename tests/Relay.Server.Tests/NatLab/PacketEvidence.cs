using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Relay.Server.Tests.Nat;

/// <summary>Packets counted at each relay port (one port per TURN allocation) of the lab server, by direction.</summary>
/// <param name="In">Port → UDP datagrams that arrived at the relay port (from peers, or another relay port).</param>
/// <param name="Out">Port → UDP datagrams the relay port sent.</param>
public sealed record RelayCounts(IReadOnlyDictionary<int, long> In, IReadOnlyDictionary<int, long> Out)
{
    public long TotalIn => In.Values.Sum();

    public long TotalOut => Out.Values.Sum();

    public override string ToString() =>
        "relay ports in {" + string.Join(", ", In.OrderBy(p => p.Key).Select(p => $"{p.Key}: {p.Value}")) +
        "} out {" + string.Join(", ", Out.OrderBy(p => p.Key).Select(p => $"{p.Key}: {p.Value}")) + "}";
}

/// <summary>
/// Proof of a path from the packets themselves (issue 7 §3), not from what a client claims:
/// <list type="bullet">
/// <item>in every client namespace, an input-hook counter per source: UDP datagrams from each other
///   site's WAN address (<c>from_r{n}</c>) and from the server's addresses (<c>from_server</c>), so a test
///   sees whether a peer's traffic arrives from the other NAT or from the relay;</item>
/// <item>in the server namespace, per relay port (each TURN allocation has one) the UDP datagrams in and
///   out, in nftables sets with per-element counters. The server exports only totals over all allocations
///   (<c>relay_turn_relayed_packets_total</c>), and counts only what it relayed, not what arrived and was
///   dropped; the sets count both, per allocation, before the server sees anything.</item>
/// </list>
/// The tables are <c>ip evidence</c>, apart from the routers' <c>ip lab</c>; they only count, never drop.
/// </summary>
internal sealed partial class PacketEvidence
{
    /// <summary>Relay:Turn's default relay port range (RFC 8656 §7.2), which the lab server keeps.</summary>
    public const int RelayPortMin = 49152;
    public const int RelayPortMax = 65535;
    private const string Table = "evidence";

    private readonly NatLab _lab;

    private PacketEvidence(NatLab lab) => _lab = lab;

    public static async Task<PacketEvidence> InstallAsync(NatLab lab)
    {
        foreach (var site in lab.Sites)
        {
            var rules = new StringBuilder();
            rules.Append(CultureInfo.InvariantCulture, $"table ip {Table} {{\n  counter from_server {{ }}\n");
            foreach (var other in lab.Sites.Where(o => o != site))
            {
                rules.Append(CultureInfo.InvariantCulture, $"  counter from_r{other.Index} {{ }}\n");
            }

            // Priority -10: before anything else could look at the datagram; policy accept: only counting.
            rules.Append("  chain input {\n    type filter hook input priority -10; policy accept;\n");
            rules.Append(CultureInfo.InvariantCulture, $"    meta l4proto udp ip saddr {{ {NatLab.ServerAddress}, {NatLab.ServerAlternateAddress} }} counter name from_server\n");
            foreach (var other in lab.Sites.Where(o => o != site))
            {
                rules.Append(CultureInfo.InvariantCulture, $"    meta l4proto udp ip saddr {other.WanAddress} counter name from_r{other.Index}\n");
            }

            rules.Append("  }\n}\n");
            await NftAsync(site.ClientNamespace, ["-f", "-"], rules.ToString());
        }

        // Relay ports: what a relayed datagram crosses on the server, whichever transport the client used
        // to reach the server (UDP, or TCP from behind a UDP-blocking NAT). Relay to relay goes through lo,
        // and so through both hooks as well.
        var range = $"{RelayPortMin.ToString(CultureInfo.InvariantCulture)}-{RelayPortMax.ToString(CultureInfo.InvariantCulture)}";
        await NftAsync(lab.ServerNamespace, ["-f", "-"], $$"""
            table ip {{Table}} {
              set relay_in { type inet_service; flags dynamic; counter; size 65536; }
              set relay_out { type inet_service; flags dynamic; counter; size 65536; }
              chain input {
                type filter hook input priority -10; policy accept;
                udp dport {{range}} add @relay_in { udp dport }
              }
              chain output {
                type filter hook output priority -10; policy accept;
                udp sport {{range}} add @relay_out { udp sport }
              }
            }

            """);
        return new PacketEvidence(lab);
    }

    /// <summary>UDP datagrams that reached <paramref name="at"/>'s client from <paramref name="from"/>'s WAN address.</summary>
    public async Task<long> FromPeerAsync(NatSite at, NatSite from) =>
        await CounterAsync(at.ClientNamespace, "from_r" + from.Index.ToString(CultureInfo.InvariantCulture));

    /// <summary>UDP datagrams that reached <paramref name="at"/>'s client from the server (STUN, TURN, relayed data).</summary>
    public async Task<long> FromServerAsync(NatSite at) => await CounterAsync(at.ClientNamespace, "from_server");

    /// <summary>The per-allocation relay counters now.</summary>
    public async Task<RelayCounts> RelayAsync() => new(await SetAsync("relay_in"), await SetAsync("relay_out"));

    /// <summary>Every counter of every namespace, for failure messages.</summary>
    public async Task<string> DescribeAsync()
    {
        var text = new StringBuilder();
        foreach (var site in _lab.Sites)
        {
            text.Append(CultureInfo.InvariantCulture, $"client {site.Index} ({site.Type}):");
            text.Append(CultureInfo.InvariantCulture, $" from_server {await FromServerAsync(site)}");
            foreach (var other in _lab.Sites.Where(o => o != site))
            {
                text.Append(CultureInfo.InvariantCulture, $" from_r{other.Index} {await FromPeerAsync(site, other)}");
            }

            text.Append('\n');
        }

        return text.Append(await RelayAsync()).Append('\n').ToString();
    }

    private async Task<long> CounterAsync(string ns, string name)
    {
        var result = await NftAsync(ns, ["list", "counter", "ip", Table, name]);
        var match = PacketsPattern().Match(result.Stdout);
        return match.Success ? long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : throw new InvalidOperationException("NAT lab: no packet count in\n" + result);
    }

    private async Task<IReadOnlyDictionary<int, long>> SetAsync(string set)
    {
        var result = await NftAsync(_lab.ServerNamespace, ["list", "set", "ip", Table, set]);
        return ElementPattern().Matches(result.Stdout).ToDictionary(
            m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
            m => long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    private static Task<LabResult> NftAsync(string ns, IReadOnlyList<string> arguments, string? input = null) =>
        LabShell.MustAsync(LabShell.Require("ip"), ["netns", "exec", ns, LabShell.Require("nft"), .. arguments], input);

    [GeneratedRegex(@"packets (\d+)")]
    private static partial Regex PacketsPattern();

    // nft 1.0: "elements = { 50001 counter packets 1 bytes 29, 50002 counter packets 3 bytes 87 }"
    [GeneratedRegex(@"(\d+) counter packets (\d+) bytes \d+")]
    private static partial Regex ElementPattern();
}

using System.Net;
using Relay.Protocol.Rendezvous;

namespace Relay.Rendezvous.Introductions;

/// <summary>
/// Candidates a device may hand its peer (RFC 8445 §5.1.1.1 leaves out loopback; we also leave out what no
/// peer could or should probe). A candidate is relayed to the other device, which sends connectivity checks
/// and, behind a symmetric NAT, birthday probes to it: an unchecked address would let one device aim
/// another's packets at the other's own loopback, a multicast group, or link-local services. Private and
/// CGNAT ranges stay: devices on one LAN reach each other that way.
/// </summary>
internal static class CandidateFilter
{
    /// <summary>
    /// The candidates worth relaying, in order; <paramref name="dropped"/> counts the others. With
    /// <paramref name="allowLoopback"/> (a lab on one machine, where TURN also allows loopback peers)
    /// loopback candidates stay.
    /// </summary>
    public static IReadOnlyList<RendezvousCandidate> Routable(IReadOnlyList<RendezvousCandidate>? candidates, bool allowLoopback, out int dropped)
    {
        dropped = 0;
        if (candidates is null || candidates.Count == 0)
        {
            return [];
        }

        List<RendezvousCandidate>? kept = null;
        for (var i = 0; i < candidates.Count; i++)
        {
            var candidate = candidates[i];
            if (IPAddress.TryParse(candidate.Address, out var address) && (IsProbeable(address) || (allowLoopback && IsLoopback(address))))
            {
                kept?.Add(candidate);
                continue;
            }

            dropped++;
            kept ??= [.. candidates.Take(i)];
        }

        return kept ?? candidates;
    }

    private static bool IsLoopback(IPAddress address) => CandidateAddress.IsLoopback(address);

    /// <summary>False for loopback, unspecified, "this network" (0/8), multicast, broadcast and link-local addresses, in either family (the rule the device applies too).</summary>
    public static bool IsProbeable(IPAddress address) => CandidateAddress.IsProbeable(address);
}

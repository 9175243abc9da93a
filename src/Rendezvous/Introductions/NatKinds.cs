namespace Relay.Rendezvous.Introductions;

/// <summary>
/// The NAT classifications a device may report: the names of DeviceClient's <c>NatType</c> (RFC 5780
/// discovery). A fixed set, so presence shows only meaningful values and the metrics' pair label has
/// bounded cardinality (at most 36 pairs), whatever devices send.
/// </summary>
internal static class NatKinds
{
    public const string Unknown = "Unknown";

    public static readonly string[] Names = [Unknown, "UdpBlocked", "Open", "FirewalledOpen", "FullCone", "AddressRestricted", "PortRestricted", "Symmetric"];

    /// <summary>Unordered pairs of <see cref="Names"/>, each once: the metrics' pair slots.</summary>
    public static readonly int PairCount = Names.Length * (Names.Length + 1) / 2;

    private static readonly string[] PairLabels = BuildPairLabels();

    /// <summary>The index of a known name (exact spelling, as <c>NatType.ToString()</c> writes it); -1 otherwise.</summary>
    public static int IndexOf(string? name) => name is null ? -1 : Array.IndexOf(Names, name);

    public static bool IsKnown(string? name) => IndexOf(name) >= 0;

    /// <summary>A known name, or <see cref="Unknown"/>.</summary>
    public static string Normalize(string? name) => IsKnown(name) ? name! : Unknown;

    /// <summary>The slot of the unordered pair {a, b}; unknown names count as <see cref="Unknown"/>.</summary>
    public static int PairIndex(string? a, string? b)
    {
        var i = Math.Max(0, IndexOf(a));
        var j = Math.Max(0, IndexOf(b));
        if (i > j)
        {
            (i, j) = (j, i);
        }

        // Row i of the upper triangle starts after rows 0..i-1, which hold n, n-1, ... entries.
        return (i * Names.Length) - (i * (i - 1) / 2) + (j - i);
    }

    /// <summary>"A/B" with the two names sorted ordinally, so a pair has one label whichever side asked.</summary>
    public static string PairLabel(int pairIndex) => PairLabels[pairIndex];

    private static string[] BuildPairLabels()
    {
        var labels = new string[PairCount];
        for (var i = 0; i < Names.Length; i++)
        {
            for (var j = i; j < Names.Length; j++)
            {
                var (a, b) = string.CompareOrdinal(Names[i], Names[j]) <= 0 ? (Names[i], Names[j]) : (Names[j], Names[i]);
                labels[PairIndex(Names[i], Names[j])] = a + "/" + b;
            }
        }

        return labels;
    }
}

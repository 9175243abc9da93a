namespace Relay.Server.Tests.Nat;

/// <summary>A fact that needs the NAT lab; skipped, saying why, where it cannot be built (not root, tools missing).</summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class NatLabFactAttribute : FactAttribute
{
    public NatLabFactAttribute()
    {
        if (NatLab.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}

/// <summary>A theory that needs the NAT lab; skipped, saying why, where it cannot be built.</summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class NatLabTheoryAttribute : TheoryAttribute
{
    public NatLabTheoryAttribute()
    {
        if (NatLab.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}

/// <summary>
/// Tests that build a NAT lab run one at a time and apart from every parallel test: labs share
/// 198.18.0.0/24 in the root namespace, and the lab's processes share the two cores.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NatLabCollection
{
    public const string Name = "NAT lab";
}

using System.Diagnostics.CodeAnalysis;

namespace Relay.Rendezvous.Introductions;

/// <summary>What <c>Relay:Rendezvous:Policy</c> allows when no rule matched.</summary>
internal enum RendezvousPolicyMode
{
    /// <summary>The two devices share at least one tag.</summary>
    SameTag,

    /// <summary>Nothing beyond the rules.</summary>
    Rules,

    /// <summary>Everyone (labs only).</summary>
    Any,
}

/// <summary>
/// Decides whether device <c>from</c> may be introduced to device <c>to</c> (docs/rendezvous.md,
/// "Authorization"). A matching Deny rule refuses whatever else matches, wherever it stands in the list,
/// so an operator can fence off a device without reordering rules; otherwise a matching allow rule
/// allows, and otherwise the policy decides. Pure: the caller looks the tags up.
/// </summary>
internal sealed class RendezvousPolicy
{
    /// <summary>Rules are scanned per <c>connect</c>; a bound keeps that cheap.</summary>
    public const int MaxRules = 1000;

    private readonly RendezvousPolicyMode _mode;
    private readonly (RendezvousMatcher From, RendezvousMatcher To, bool Deny)[] _rules;

    private RendezvousPolicy(RendezvousPolicyMode mode, (RendezvousMatcher, RendezvousMatcher, bool)[] rules)
    {
        _mode = mode;
        _rules = rules;
    }

    public RendezvousPolicyMode Mode => _mode;

    /// <summary>Builds the policy from validated options (<see cref="RendezvousOptions.Validate"/>); throws on invalid ones.</summary>
    public static RendezvousPolicy Create(RendezvousOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!TryParseMode(options.Policy, out var mode))
        {
            throw new ArgumentException($"{RendezvousOptions.SectionName}:Policy: '{options.Policy}' is not SameTag, Rules or Any", nameof(options));
        }

        var rules = new (RendezvousMatcher, RendezvousMatcher, bool)[options.Rules.Count];
        for (var i = 0; i < rules.Length; i++)
        {
            var rule = options.Rules[i];
            if (!RendezvousMatcher.TryParse(rule.From, out var from) || !RendezvousMatcher.TryParse(rule.To, out var to))
            {
                throw new ArgumentException($"{RendezvousOptions.SectionName}:Rules:{i}: invalid matcher", nameof(options));
            }

            rules[i] = (from, to, rule.Deny);
        }

        return new RendezvousPolicy(mode, rules);
    }

    // Enum.TryParse also takes numbers and "A,B" flag lists; a policy is one of the three names.
    public static bool TryParseMode(string? text, out RendezvousPolicyMode mode) =>
        Enum.TryParse(text, ignoreCase: true, out mode) && Enum.IsDefined(mode) && !int.TryParse(text, out _) && !text!.Contains(',', StringComparison.Ordinal);

    /// <summary>Whether <paramref name="from"/> (with <paramref name="fromTags"/>) may reach <paramref name="to"/> (with <paramref name="toTags"/>).</summary>
    public bool Allows(string from, IReadOnlyList<string> fromTags, string to, IReadOnlyList<string> toTags)
    {
        ArgumentNullException.ThrowIfNull(fromTags);
        ArgumentNullException.ThrowIfNull(toTags);
        var allowedByRule = false;
        foreach (var (fromMatcher, toMatcher, deny) in _rules)
        {
            if (fromMatcher.Matches(from, fromTags) && toMatcher.Matches(to, toTags))
            {
                if (deny)
                {
                    return false;
                }

                allowedByRule = true;
            }
        }

        return allowedByRule || _mode switch
        {
            RendezvousPolicyMode.Any => true,
            RendezvousPolicyMode.SameTag => SharesTag(fromTags, toTags),
            _ => false,
        };
    }

    private static bool SharesTag(IReadOnlyList<string> a, IReadOnlyList<string> b)
    {
        // Devices carry at most a few dozen tags (DeviceTags bounds them), so the quadratic scan is cheaper than a set.
        foreach (var tag in a)
        {
            foreach (var other in b)
            {
                if (string.Equals(tag, other, StringComparison.Ordinal))
                {
                    return true;
                }
            }
        }

        return false;
    }
}

/// <summary>A rule's side: <c>*</c>, <c>device:ID</c> or <c>tag:NAME</c>.</summary>
internal readonly record struct RendezvousMatcher(RendezvousMatcherKind Kind, string Value)
{
    public static bool TryParse(string? text, [NotNullWhen(true)] out RendezvousMatcher matcher)
    {
        matcher = default;
        if (text == "*")
        {
            matcher = new RendezvousMatcher(RendezvousMatcherKind.Anyone, string.Empty);
            return true;
        }

        if (text is null)
        {
            return false;
        }

        if (text.StartsWith("device:", StringComparison.Ordinal) && text.Length > "device:".Length)
        {
            matcher = new RendezvousMatcher(RendezvousMatcherKind.Device, text["device:".Length..]);
            return true;
        }

        if (text.StartsWith("tag:", StringComparison.Ordinal) && text.Length > "tag:".Length)
        {
            matcher = new RendezvousMatcher(RendezvousMatcherKind.Tag, text["tag:".Length..]);
            return true;
        }

        return false;
    }

    public bool Matches(string device, IReadOnlyList<string> tags) => Kind switch
    {
        RendezvousMatcherKind.Anyone => true,
        RendezvousMatcherKind.Device => string.Equals(device, Value, StringComparison.Ordinal),
        _ => tags.Contains(Value, StringComparer.Ordinal),
    };
}

internal enum RendezvousMatcherKind
{
    Anyone,
    Device,
    Tag,
}

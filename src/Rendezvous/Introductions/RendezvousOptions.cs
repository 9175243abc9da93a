namespace Relay.Rendezvous.Introductions;

/// <summary><c>Relay:Rendezvous</c>: who may be introduced to whom, and the limits on introductions (docs/rendezvous.md).</summary>
public sealed class RendezvousOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Rendezvous";

    /// <summary>Answer rendezvous messages at all.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary><c>SameTag</c> (the two devices share a tag), <c>Rules</c> (only <see cref="Rules"/>) or <c>Any</c> (labs only).</summary>
    public string Policy { get; set; } = "SameTag";

    /// <summary>Checked in order before <see cref="Policy"/>; the first rule that matches decides.</summary>
    public IList<RendezvousRuleOptions> Rules { get; } = [];

    /// <summary>Introductions (<c>connect</c>) one device may ask for per minute (token bucket, burst of the same size).</summary>
    public int MaxIntroductionsPerMinute { get; set; } = 30;

    /// <summary>Offers waiting for their answer, across the server.</summary>
    public int MaxPendingSessions { get; set; } = 10_000;

    /// <summary>How long an offer waits for its answer before the requester gets <c>error</c> <c>timeout</c>.</summary>
    public int OfferTimeoutSeconds { get; set; } = 15;

    /// <summary>Lifetime of TURN credentials minted for a <c>turn-credentials-request</c>.</summary>
    public int TurnCredentialTtlSeconds { get; set; } = 3600;

    /// <summary>TURN credentials one device may ask for per minute (each can open relay allocations).</summary>
    public int MaxCredentialsPerMinute { get; set; } = 10;

    /// <summary>Signalling messages of one device waiting in the server's queue at once; more are dropped and counted.</summary>
    public int MaxQueuedMessagesPerDevice { get; set; } = 16;

    /// <summary>Adds every problem to <paramref name="errors"/>, each naming its key.</summary>
    public void Validate(List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"{SectionName}:{key}: {problem}");
            }
        }

        Check(RendezvousPolicy.TryParseMode(Policy, out _), nameof(Policy), $"'{Policy}' is not SameTag, Rules or Any");
        Check(MaxIntroductionsPerMinute is >= 1 and <= 100_000, nameof(MaxIntroductionsPerMinute), "must be 1..100000");
        Check(MaxPendingSessions is >= 1 and <= 10_000_000, nameof(MaxPendingSessions), "must be 1..10000000");
        Check(OfferTimeoutSeconds is >= 1 and <= 3600, nameof(OfferTimeoutSeconds), "must be 1..3600");
        Check(TurnCredentialTtlSeconds is >= 60 and <= 7 * 86_400, nameof(TurnCredentialTtlSeconds), "must be 60..604800");
        Check(MaxCredentialsPerMinute is >= 1 and <= 100_000, nameof(MaxCredentialsPerMinute), "must be 1..100000");
        Check(MaxQueuedMessagesPerDevice is >= 1 and <= 8192, nameof(MaxQueuedMessagesPerDevice), "must be 1..8192");
        Check(Rules.Count <= RendezvousPolicy.MaxRules, nameof(Rules), $"at most {RendezvousPolicy.MaxRules} rules");
        for (var i = 0; i < Rules.Count; i++)
        {
            Check(RendezvousMatcher.TryParse(Rules[i].From, out _), $"Rules:{i}:From", $"'{Rules[i].From}' is not '*', 'device:ID' or 'tag:NAME'");
            Check(RendezvousMatcher.TryParse(Rules[i].To, out _), $"Rules:{i}:To", $"'{Rules[i].To}' is not '*', 'device:ID' or 'tag:NAME'");
        }
    }
}

/// <summary>One authorization rule: <c>{ "From": "tag:techs", "To": "tag:field" }</c>; <see cref="Deny"/> makes it refuse.</summary>
public sealed class RendezvousRuleOptions
{
    /// <summary>Who asks: <c>*</c>, <c>device:ID</c> or <c>tag:NAME</c>.</summary>
    public string From { get; set; } = string.Empty;

    /// <summary>Whom they want to reach: <c>*</c>, <c>device:ID</c> or <c>tag:NAME</c>.</summary>
    public string To { get; set; } = string.Empty;

    /// <summary>When true a match refuses the introduction; otherwise it allows it.</summary>
    public bool Deny { get; set; }
}

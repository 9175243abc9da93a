using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

/// <summary>One subscription of one session (MQTT 5.0 §3.8.3.1 subscription options).</summary>
internal sealed class MqttSubscription(MqttSession session, string filter, string innerFilter, string? shareGroup)
{
    public MqttSession Session { get; } = session;

    /// <summary>The filter as the client sent it, <c>$share/</c> included: the key for UNSUBSCRIBE and the store.</summary>
    public string Filter { get; } = filter;

    /// <summary>The filter matched against topics (the shared prefix removed).</summary>
    public string InnerFilter { get; } = innerFilter;

    public string? ShareGroup { get; } = shareGroup;

    public byte MaximumQoS { get; set; }

    public bool NoLocal { get; set; }

    public bool RetainAsPublished { get; set; }

    public byte RetainHandling { get; set; }

    public uint SubscriptionIdentifier { get; set; }

    /// <summary>The subscription <paramref name="persisted"/> describes, for <paramref name="session"/>; <c>$share/{group}/</c> is split off (§4.8.2).</summary>
    public static MqttSubscription Create(MqttSession session, PersistedSubscription persisted)
    {
        string inner = persisted.TopicFilter;
        string? group = null;
        if (MqttTopic.TryParseShared(persisted.TopicFilter, out var groupSpan, out var innerSpan))
        {
            group = groupSpan.ToString();
            inner = innerSpan.ToString();
        }

        return new MqttSubscription(session, persisted.TopicFilter, inner, group)
        {
            MaximumQoS = persisted.MaximumQoS,
            NoLocal = persisted.NoLocal,
            RetainAsPublished = persisted.RetainAsPublished,
            RetainHandling = persisted.RetainHandling,
            SubscriptionIdentifier = persisted.SubscriptionIdentifier,
        };
    }

    public PersistedSubscription ToPersisted() => new(Filter, MaximumQoS, NoLocal, RetainAsPublished, RetainHandling, SubscriptionIdentifier);
}

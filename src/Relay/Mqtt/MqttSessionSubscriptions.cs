using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

/// <summary>
/// One session's subscriptions by filter (as the client sent it, <c>$share/</c> included), kept in step with the
/// subscription index that routing matches against: every change here is made in the index too. Not
/// thread-safe: the session's lock guards it, and the index takes only its own lock. A dictionary itself
/// rather than a wrapper around one, so a subscribed session holds one object for its subscriptions, not two.
/// </summary>
internal sealed class MqttSessionSubscriptions : Dictionary<string, MqttSubscription>
{
    public MqttSessionSubscriptions()
        : base(StringComparer.Ordinal)
    {
    }

    /// <summary>
    /// Adds or replaces (same filter) <paramref name="subscription"/>; false when a new filter would go past
    /// <paramref name="maxSubscriptions"/>. <paramref name="existed"/>: the filter was already subscribed.
    /// </summary>
    public bool TryPut(MqttSubscription subscription, int maxSubscriptions, MqttSubscriptionTree index, MqttMetrics metrics, out bool existed)
    {
        existed = TryGetValue(subscription.Filter, out var previous);
        if (!existed && Count >= maxSubscriptions)
        {
            return false;
        }

        if (previous is not null)
        {
            index.Remove(previous);
            metrics.Subscriptions(-1);
        }

        this[subscription.Filter] = subscription;
        index.Add(subscription);
        metrics.Subscriptions(+1);
        return true;
    }

    /// <summary>Removes the subscription to <paramref name="filter"/>; false when there was none.</summary>
    public bool TryDrop(string filter, MqttSubscriptionTree index, MqttMetrics metrics)
    {
        if (!Remove(filter, out var subscription))
        {
            return false;
        }

        index.Remove(subscription);
        metrics.Subscriptions(-1);
        return true;
    }

    /// <summary>Removes every subscription, from the index too.</summary>
    public void DropAll(MqttSubscriptionTree index, MqttMetrics metrics)
    {
        foreach (var subscription in Values)
        {
            index.Remove(subscription);
        }

        metrics.Subscriptions(-Count);
        Clear();
    }

    /// <summary>The non-shared subscription matching <paramref name="topic"/> with the highest maximum QoS; null when none matches.</summary>
    public MqttSubscription? BestOwnMatch(string topic)
    {
        MqttSubscription? best = null;
        foreach (var subscription in Values)
        {
            if (subscription.ShareGroup is null && MqttTopic.Matches(subscription.InnerFilter, topic) && (best is null || subscription.MaximumQoS > best.MaximumQoS))
            {
                best = subscription;
            }
        }

        return best;
    }
}

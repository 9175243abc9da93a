namespace Relay.Mqtt;

/// <summary>One subscription of one session (MQTT 5.0 §3.8.3.1 subscription options).</summary>
internal sealed class MqttSubscription(MqttSessionState session, string filter, string innerFilter, string? shareGroup)
{
    public MqttSessionState Session { get; } = session;

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

    public PersistedSubscription ToPersisted() => new(Filter, MaximumQoS, NoLocal, RetainAsPublished, RetainHandling, SubscriptionIdentifier);
}

/// <summary>
/// Topic-level trie of every subscription (MQTT 5.0 §4.7). A PUBLISH walks one path per level plus the
/// '+' and '#' branches, so matching costs the topic's depth, not the number of subscriptions. Shared
/// subscriptions (§4.8.2) live at their inner filter's node as groups; a match picks one member per
/// group, round robin, preferring members that are online.
/// </summary>
internal sealed class MqttSubscriptionTree
{
    private readonly Lock _sync = new();
    private readonly Node _root = new();

    public void Add(MqttSubscription subscription)
    {
        lock (_sync)
        {
            var node = _root;
            foreach (var level in new MqttTopicLevels(subscription.InnerFilter))
            {
                node = node.GetOrAddChild(level);
            }

            if (subscription.ShareGroup is null)
            {
                node.Subscribers ??= [];
                node.Subscribers.Add(subscription);
            }
            else
            {
                node.Shared ??= new(StringComparer.Ordinal);
                if (!node.Shared.TryGetValue(subscription.ShareGroup, out var group))
                {
                    group = new SharedGroup();
                    node.Shared[subscription.ShareGroup] = group;
                }

                group.Members.Add(subscription);
            }
        }
    }

    public void Remove(MqttSubscription subscription)
    {
        lock (_sync)
        {
            RemoveAt(_root, subscription, subscription.InnerFilter.AsSpan(), atNode: false);
        }
    }

    /// <summary>Appends every subscription matching <paramref name="topic"/>; shared groups contribute one member each.</summary>
    public void Match(ReadOnlySpan<char> topic, List<MqttSubscription> results)
    {
        lock (_sync)
        {
            // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a topic starting with '$'.
            var dollar = !topic.IsEmpty && topic[0] == '$';
            MatchAt(_root, topic, dollar, results);
        }
    }

    private static void MatchAt(Node node, ReadOnlySpan<char> rest, bool noWildcards, List<MqttSubscription> results)
    {
        var slash = rest.IndexOf('/');
        var level = slash < 0 ? rest : rest[..slash];
        if (!noWildcards && node.Hash is { } hash)
        {
            // '#' also matches the parent level itself ("sport/#" matches "sport", §4.7.1.2).
            Collect(hash, results);
        }

        if (!noWildcards && node.Plus is { } plus)
        {
            if (slash < 0)
            {
                Collect(plus, results);
                if (plus.Hash is { } plusHash)
                {
                    Collect(plusHash, results);
                }
            }
            else
            {
                MatchAt(plus, rest[(slash + 1)..], false, results);
            }
        }

        if (node.Children is not null && node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var child))
        {
            if (slash < 0)
            {
                Collect(child, results);
                if (child.Hash is { } childHash)
                {
                    Collect(childHash, results);
                }
            }
            else
            {
                MatchAt(child, rest[(slash + 1)..], false, results);
            }
        }
    }

    private static void Collect(Node node, List<MqttSubscription> results)
    {
        if (node.Subscribers is { } subscribers)
        {
            results.AddRange(subscribers);
        }

        if (node.Shared is { } shared)
        {
            foreach (var group in shared.Values)
            {
                if (group.Pick() is { } member)
                {
                    results.Add(member);
                }
            }
        }
    }

    private static void RemoveAt(Node node, MqttSubscription subscription, ReadOnlySpan<char> rest, bool atNode)
    {
        if (atNode)
        {
            if (subscription.ShareGroup is null)
            {
                node.Subscribers?.Remove(subscription);
            }
            else if (node.Shared is not null && node.Shared.TryGetValue(subscription.ShareGroup, out var group))
            {
                group.Members.Remove(subscription);
                if (group.Members.Count == 0)
                {
                    node.Shared.Remove(subscription.ShareGroup);
                }
            }

            return;
        }

        var slash = rest.IndexOf('/');
        var level = slash < 0 ? rest : rest[..slash];
        var next = slash < 0 ? ReadOnlySpan<char>.Empty : rest[(slash + 1)..];
        Node? child = level switch
        {
            "+" => node.Plus,
            "#" => node.Hash,
            _ => node.Children is not null && node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var found) ? found : null,
        };
        if (child is null)
        {
            return;
        }

        RemoveAt(child, subscription, next, slash < 0);
        if (!child.IsEmpty)
        {
            return;
        }

        // Prune, so a churn of unique filters (device ids) does not leave the tree growing forever.
        if (level is "+")
        {
            node.Plus = null;
        }
        else if (level is "#")
        {
            node.Hash = null;
        }
        else
        {
            node.Children!.GetAlternateLookup<ReadOnlySpan<char>>().Remove(level);
        }
    }

    private sealed class SharedGroup
    {
        private int _next;

        public List<MqttSubscription> Members { get; } = [];

        public MqttSubscription? Pick()
        {
            var count = Members.Count;
            if (count == 0)
            {
                return null;
            }

            for (var i = 0; i < count; i++)
            {
                var candidate = Members[(_next + i) % count];
                if (candidate.Session.IsOnline)
                {
                    _next = (_next + i + 1) % count;
                    return candidate;
                }
            }

            var fallback = Members[_next % count];
            _next = (_next + 1) % count;
            return fallback;
        }
    }

    private sealed class Node
    {
        public Dictionary<string, Node>? Children { get; set; }

        public Node? Plus { get; set; }

        public Node? Hash { get; set; }

        public List<MqttSubscription>? Subscribers { get; set; }

        public Dictionary<string, SharedGroup>? Shared { get; set; }

        public bool IsEmpty => (Children is null || Children.Count == 0) && Plus is null && Hash is null
            && (Subscribers is null || Subscribers.Count == 0) && (Shared is null || Shared.Count == 0);

        public Node GetOrAddChild(ReadOnlySpan<char> level)
        {
            if (level is "+")
            {
                return Plus ??= new Node();
            }

            if (level is "#")
            {
                return Hash ??= new Node();
            }

            Children ??= new(StringComparer.Ordinal);
            var lookup = Children.GetAlternateLookup<ReadOnlySpan<char>>();
            if (!lookup.TryGetValue(level, out var child))
            {
                child = new Node();
                Children[level.ToString()] = child;
            }

            return child;
        }
    }
}

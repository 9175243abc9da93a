namespace Relay.Server.Mqtt;

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
    private readonly Stack<(Node Node, int Offset, bool DollarRoot)> _walk = new();

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
            RemoveIterative(_root, subscription);
        }
    }

    /// <summary>Appends every subscription matching <paramref name="topic"/>; shared groups contribute one member each.</summary>
    public void Match(ReadOnlySpan<char> topic, List<MqttSubscription> results)
    {
        lock (_sync)
        {
            // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a topic starting with '$'.
            var dollar = !topic.IsEmpty && topic[0] == '$';
            MatchIterative(topic, dollar, results);
        }
    }

    // Iterative (an explicit stack, reused under the lock) rather than one call per level: a topic's
    // depth comes from the wire, and recursion over it is a stack overflow no catch can stop (review C1).
    private void MatchIterative(ReadOnlySpan<char> topic, bool noWildcards, List<MqttSubscription> results)
    {
        var pending = _walk;
        pending.Clear();
        pending.Push((_root, 0, noWildcards));
        while (pending.TryPop(out var step))
        {
            var (node, offset, dollarRoot) = step;
            var rest = topic[offset..];
            var slash = rest.IndexOf('/');
            var level = slash < 0 ? rest : rest[..slash];
            var next = offset + slash + 1;
            if (!dollarRoot && node.Hash is { } hash)
            {
                // '#' also matches the parent level itself ("sport/#" matches "sport", §4.7.1.2).
                Collect(hash, results);
            }

            if (!dollarRoot && node.Plus is { } plus)
            {
                Visit(pending, plus, slash < 0, next, results);
            }

            if (node.Children is not null && node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var child))
            {
                Visit(pending, child, slash < 0, next, results);
            }
        }
    }

    // The topic's last level collects the node's subscribers and its '#' child ("a/#" matches "a");
    // any other level walks on.
    private static void Visit(Stack<(Node Node, int Offset, bool DollarRoot)> pending, Node target, bool last, int next, List<MqttSubscription> results)
    {
        if (!last)
        {
            pending.Push((target, next, false));
            return;
        }

        Collect(target, results);
        if (target.Hash is { } hash)
        {
            Collect(hash, results);
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

    private static void RemoveIterative(Node root, MqttSubscription subscription)
    {
        // Walk down remembering the path, remove at the filter's node, then prune empty nodes upwards so a
        // churn of unique filters (device ids) does not leave the tree growing forever.
        var path = new List<(Node Parent, string Level, Node Child)>();
        var node = root;
        foreach (var level in new MqttTopicLevels(subscription.InnerFilter))
        {
            Node? child;
            string key;
            if (level is "+")
            {
                (child, key) = (node.Plus, "+");
            }
            else if (level is "#")
            {
                (child, key) = (node.Hash, "#");
            }
            else if (node.Children is null || !node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out key!, out child))
            {
                return;
            }

            if (child is null)
            {
                return;
            }

            path.Add((node, key, child));
            node = child;
        }

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

        for (var i = path.Count - 1; i >= 0; i--)
        {
            var (parent, level, child) = path[i];
            if (!child.IsEmpty)
            {
                return;
            }

            // A child stored under a literal "+" or "#" key cannot exist: those levels are wildcards.
            if (ReferenceEquals(parent.Plus, child))
            {
                parent.Plus = null;
            }
            else if (ReferenceEquals(parent.Hash, child))
            {
                parent.Hash = null;
            }
            else
            {
                parent.Children!.Remove(level);
            }
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

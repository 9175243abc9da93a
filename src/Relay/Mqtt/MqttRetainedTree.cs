namespace Relay.Mqtt;

/// <summary>
/// Retained messages by topic level (MQTT 5.0 §3.3.1.3, §4.7), so a SUBSCRIBE walks only the branches its
/// filter can match instead of every retained message. Not thread-safe: the broker guards it.
/// </summary>
internal sealed class MqttRetainedTree
{
    private readonly Node _root = new();

    public int Count { get; private set; }

    public bool Contains(string topic) => Find(topic) is { Message: not null };

    /// <summary>Sets or replaces the topic's message.</summary>
    public void Set(StoredMessage message)
    {
        var node = _root;
        foreach (var level in new MqttTopicLevels(message.Topic))
        {
            node.Children ??= new(StringComparer.Ordinal);
            var lookup = node.Children.GetAlternateLookup<ReadOnlySpan<char>>();
            if (!lookup.TryGetValue(level, out var child))
            {
                child = new Node();
                node.Children[level.ToString()] = child;
            }

            node = child;
        }

        if (node.Message is null)
        {
            Count++;
        }

        node.Message = message;
    }

    /// <summary>Removes the topic's message; false when there was none.</summary>
    public bool Remove(string topic) => RemoveAt(_root, topic.AsSpan());

    /// <summary>Appends every retained message whose topic <paramref name="filter"/> matches.</summary>
    public void Match(ReadOnlySpan<char> filter, List<StoredMessage> results) => MatchAt(_root, filter, root: true, results);

    public IEnumerable<StoredMessage> All()
    {
        var stack = new Stack<Node>();
        stack.Push(_root);
        while (stack.TryPop(out var node))
        {
            if (node.Message is { } message)
            {
                yield return message;
            }

            if (node.Children is { } children)
            {
                foreach (var child in children.Values)
                {
                    stack.Push(child);
                }
            }
        }
    }

    private Node? Find(string topic)
    {
        var node = _root;
        foreach (var level in new MqttTopicLevels(topic))
        {
            if (node.Children is null || !node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out node))
            {
                return null;
            }
        }

        return node;
    }

    private static void MatchAt(Node node, ReadOnlySpan<char> filter, bool root, List<StoredMessage> results)
    {
        var slash = filter.IndexOf('/');
        var level = slash < 0 ? filter : filter[..slash];
        var rest = slash < 0 ? ReadOnlySpan<char>.Empty : filter[(slash + 1)..];
        if (level is "#")
        {
            // '#' matches the parent level too ("a/#" matches "a"), and every level below [MQTT-4.7.1-2].
            if (!root && node.Message is { } parent)
            {
                results.Add(parent);
            }

            CollectBelow(node, root, results);
            return;
        }

        if (node.Children is null)
        {
            return;
        }

        if (level is "+")
        {
            foreach (var (name, child) in node.Children)
            {
                // [MQTT-4.7.2-1]: a leading wildcard does not match topics starting with '$'.
                if (root && name.StartsWith('$'))
                {
                    continue;
                }

                Next(child, rest, slash < 0, results);
            }

            return;
        }

        if (node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var exact))
        {
            Next(exact, rest, slash < 0, results);
        }
    }

    private static void Next(Node child, ReadOnlySpan<char> rest, bool last, List<StoredMessage> results)
    {
        if (!last)
        {
            MatchAt(child, rest, root: false, results);
            return;
        }

        if (child.Message is { } message)
        {
            results.Add(message);
        }
    }

    private static void CollectBelow(Node node, bool root, List<StoredMessage> results)
    {
        if (node.Children is null)
        {
            return;
        }

        foreach (var (name, child) in node.Children)
        {
            if (root && name.StartsWith('$'))
            {
                continue;
            }

            if (child.Message is { } message)
            {
                results.Add(message);
            }

            CollectBelow(child, root: false, results);
        }
    }

    private bool RemoveAt(Node node, ReadOnlySpan<char> rest)
    {
        var slash = rest.IndexOf('/');
        var level = slash < 0 ? rest : rest[..slash];
        if (node.Children is null || !node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var child))
        {
            return false;
        }

        bool removed;
        if (slash < 0)
        {
            removed = child.Message is not null;
            child.Message = null;
            if (removed)
            {
                Count--;
            }
        }
        else
        {
            removed = RemoveAt(child, rest[(slash + 1)..]);
        }

        if (child.Message is null && (child.Children is null || child.Children.Count == 0))
        {
            node.Children.GetAlternateLookup<ReadOnlySpan<char>>().Remove(level);
        }

        return removed;
    }

    private sealed class Node
    {
        public Dictionary<string, Node>? Children { get; set; }

        public StoredMessage? Message { get; set; }
    }
}

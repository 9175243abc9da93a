namespace Relay.Server.Mqtt;

/// <summary>
/// Retained messages by topic level (MQTT 5.0 §3.3.1.3, §4.7), so a SUBSCRIBE walks only the branches its
/// filter can match instead of every retained message. Not thread-safe: <see cref="MqttRetainedMessages"/> guards it.
/// </summary>
internal sealed class MqttRetainedTree
{
    private readonly Node _root = new();

    // Reused by every walk; the owner's lock makes the tree single-threaded.
    private readonly Stack<Step> _walk = new();
    private readonly Stack<Node> _collect = new();

    public int Count { get; private set; }

    public bool Contains(string topic) => Find(topic) is { Message: not null };

    /// <summary>The topic's retained message, if any.</summary>
    public StoredMessage? Get(string topic) => Find(topic)?.Message;

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
    public bool Remove(string topic) => RemoveIterative(topic);

    /// <summary>Appends every retained message whose topic <paramref name="filter"/> matches.</summary>
    public void Match(ReadOnlySpan<char> filter, List<StoredMessage> results) => MatchIterative(filter, results);

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

    // Iterative walks (an explicit stack instead of one call per level): a topic's depth comes from the
    // wire, and recursion over it is a stack overflow that no catch can stop (the security review's C1).
    private void MatchIterative(ReadOnlySpan<char> filter, List<StoredMessage> results)
    {
        var pending = _walk;
        pending.Clear();
        pending.Push(new Step(_root, 0, Root: true));
        while (pending.TryPop(out var step))
        {
            var node = step.Node;
            var rest = filter[step.Offset..];
            var slash = rest.IndexOf('/');
            var level = slash < 0 ? rest : rest[..slash];
            var next = slash < 0 ? filter.Length : step.Offset + slash + 1;
            if (level is "#")
            {
                // '#' matches the parent level too ("a/#" matches "a"), and every level below [MQTT-4.7.1-2].
                if (!step.Root && node.Message is { } parent)
                {
                    results.Add(parent);
                }

                CollectBelow(node, step.Root, results);
                continue;
            }

            if (node.Children is null)
            {
                continue;
            }

            if (level is "+")
            {
                foreach (var (name, child) in node.Children)
                {
                    // [MQTT-4.7.2-1]: a leading wildcard does not match topics starting with '$'.
                    if (step.Root && name.StartsWith('$'))
                    {
                        continue;
                    }

                    Next(pending, child, next, slash < 0, results);
                }

                continue;
            }

            if (node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var exact))
            {
                Next(pending, exact, next, slash < 0, results);
            }
        }
    }

    private static void Next(Stack<Step> pending, Node child, int offset, bool last, List<StoredMessage> results)
    {
        if (!last)
        {
            pending.Push(new Step(child, offset, Root: false));
            return;
        }

        if (child.Message is { } message)
        {
            results.Add(message);
        }
    }

    private void CollectBelow(Node start, bool root, List<StoredMessage> results)
    {
        var below = _collect;
        below.Clear();
        if (start.Children is null)
        {
            return;
        }

        foreach (var (name, child) in start.Children)
        {
            if (!(root && name.StartsWith('$')))
            {
                below.Push(child);
            }
        }

        while (below.TryPop(out var node))
        {
            if (node.Message is { } message)
            {
                results.Add(message);
            }

            if (node.Children is { } children)
            {
                foreach (var child in children.Values)
                {
                    below.Push(child);
                }
            }
        }
    }

    private bool RemoveIterative(string topic)
    {
        // Walk down remembering the path, then clear the message and prune empty nodes upwards.
        var path = new List<(Node Parent, string Level, Node Child)>();
        var node = _root;
        foreach (var level in new MqttTopicLevels(topic))
        {
            if (node.Children is null || !node.Children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var actualKey, out var child))
            {
                return false;
            }

            path.Add((node, actualKey, child));
            node = child;
        }

        if (node.Message is null)
        {
            return false;
        }

        node.Message = null;
        Count--;
        for (var i = path.Count - 1; i >= 0; i--)
        {
            var (parent, level, child) = path[i];
            if (child.Message is not null || child.Children is { Count: > 0 })
            {
                break;
            }

            parent.Children!.Remove(level);
        }

        return true;
    }

    private readonly record struct Step(Node Node, int Offset, bool Root);

    private sealed class Node
    {
        public Dictionary<string, Node>? Children { get; set; }

        public StoredMessage? Message { get; set; }
    }
}

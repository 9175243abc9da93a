using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.InMemory;

/// <summary>Non-durable <see cref="IMqttRetainedStore"/>; the broker keeps its own index, so this only has to survive nothing.</summary>
internal sealed class InMemoryRetainedStore : IMqttRetainedStore
{
    private readonly Lock _sync = new();
    private readonly Dictionary<string, StoredMessage> _messages = new(StringComparer.Ordinal);

    public ValueTask<IReadOnlyList<StoredMessage>> LoadAllAsync(CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            IReadOnlyList<StoredMessage> all = _messages.Values.ToArray();
            return ValueTask.FromResult(all);
        }
    }

    public ValueTask SetAsync(StoredMessage message, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            // [MQTT-3.3.1-6]: a zero-length retained payload removes the topic's retained message.
            if (message.Payload.IsEmpty)
            {
                _messages.Remove(message.Topic);
            }
            else
            {
                _messages[message.Topic] = message;
            }
        }

        return ValueTask.CompletedTask;
    }
}

using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// Runs the application's handlers for what it subscribed to: topic handlers (<c>SubscribeAsync</c>) and the
/// desired-state handler (<c>devices/{id}/twin/delta</c>). Deliveries wait in a bounded queue and run one at a
/// time, in arrival order (a later delta is never applied before an earlier one), off the read loop (a handler
/// may publish and wait for the PUBACK the read loop reads). Each is acknowledged when its handler returned;
/// one that finds the queue full is not, so the server sends it again after the next reconnect.
/// </summary>
internal sealed class MessageDispatcher
{
    /// <summary>Deliveries waiting for their handler.</summary>
    public const int QueueLength = 256;

    private readonly Channel<Delivery> _queue =
        Channel.CreateBounded<Delivery>(new BoundedChannelOptions(QueueLength) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly object _gate = new();
    private readonly string _deltaTopic;
    private readonly ILogger _logger;
    private readonly Action<string, Exception?> _raiseError;
    private (string Filter, byte[] FilterUtf8, Func<DeviceMessage, CancellationToken, Task> Handler)[] _handlers = [];
    private Func<DesiredStateDelta, CancellationToken, Task>? _desired;

    public MessageDispatcher(string deviceId, ILogger logger, Action<string, Exception?> raiseError)
    {
        _deltaTopic = $"devices/{deviceId}/twin/delta";
        _logger = logger;
        _raiseError = raiseError;
        DeltaTopicUtf8 = Encoding.UTF8.GetBytes(_deltaTopic);
    }

    public string DeltaTopic => _deltaTopic;

    public byte[] DeltaTopicUtf8 { get; }

    public bool HasDesiredHandler => Volatile.Read(ref _desired) is not null;

    public void SetDesiredHandler(Func<DesiredStateDelta, CancellationToken, Task> handler) => Volatile.Write(ref _desired, handler);

    /// <summary>Adds (or replaces) the handler of <paramref name="filter"/>.</summary>
    public void SetHandler(string filter, Func<DeviceMessage, CancellationToken, Task> handler)
    {
        lock (_gate)
        {
            var index = Array.FindIndex(_handlers, h => h.Filter == filter);
            var entry = (filter, Encoding.UTF8.GetBytes(filter), handler);
            _handlers = index < 0 ? [.. _handlers, entry] : [.. _handlers[..index], entry, .. _handlers[(index + 1)..]];
        }
    }

    /// <summary>Whether a handler takes <paramref name="topic"/>: the delta topic (with a desired handler) or a subscribed filter.</summary>
    public bool Wants(ReadOnlySpan<byte> topic)
    {
        if (topic.SequenceEqual(DeltaTopicUtf8))
        {
            return HasDesiredHandler;
        }

        foreach (var handler in Volatile.Read(ref _handlers))
        {
            if (MqttTopic.Matches(handler.FilterUtf8, topic))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Queues a delivery (the caller copied topic and payload: the frame is a view of the read buffer). False when
    /// the queue is full: the caller does not acknowledge it.
    /// </summary>
    public bool TryQueue(MqttConnection connection, string topic, byte[] payload, bool retain, byte qos, ushort packetId) =>
        _queue.Writer.TryWrite(new Delivery(connection, topic, payload, retain, qos, packetId));

    /// <summary>Runs deliveries until <paramref name="stopping"/>; what is left is not acknowledged (the server sends it again).</summary>
    public async Task RunAsync(CancellationToken stopping)
    {
        try
        {
            while (await _queue.Reader.WaitToReadAsync(stopping).ConfigureAwait(false))
            {
                while (_queue.Reader.TryRead(out var delivery))
                {
                    await RunOneAsync(delivery, stopping).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    private async Task RunOneAsync(Delivery delivery, CancellationToken stopping)
    {
        try
        {
            if (delivery.Topic == _deltaTopic)
            {
                await RunDesiredAsync(delivery, stopping).ConfigureAwait(false);
            }
            else
            {
                foreach (var handler in Volatile.Read(ref _handlers))
                {
                    if (MqttTopic.Matches(handler.Filter, delivery.Topic))
                    {
                        await handler.Handler(new DeviceMessage(delivery.Topic, delivery.Payload, delivery.Retain), stopping).ConfigureAwait(false);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // Stopping: not acknowledged, so the server delivers it again to the next run.
            return;
        }
#pragma warning disable CA1031 // A host's handler must not end the dispatch; it is reported, and the message acknowledged (it would fail again).
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _raiseError($"A handler for {delivery.Topic} threw.", ex);
        }

        try
        {
            await delivery.Connection.AcknowledgeAsync(delivery.QoS, delivery.PacketId).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or System.Net.WebSockets.WebSocketException)
        {
            // That connection is gone; the server sends the message again on the next one.
            _logger.LogDebug("Could not acknowledge a message on {Topic}: the connection closed", delivery.Topic);
        }
    }

    private async Task RunDesiredAsync(Delivery delivery, CancellationToken stopping)
    {
        var handler = Volatile.Read(ref _desired);
        if (handler is null)
        {
            return;
        }

        // docs/data.md: {"version": N, "state": {...}}.
        long version;
        JsonElement state;
        try
        {
            using var document = JsonDocument.Parse(delivery.Payload, new JsonDocumentOptions { MaxDepth = 64 });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("version", out var v) || !v.TryGetInt64(out version)
                || !root.TryGetProperty("state", out var s) || s.ValueKind != JsonValueKind.Object)
            {
                _raiseError("Ignored a malformed desired-state delta from the server: expected {\"version\": N, \"state\": {...}}.", null);
                return;
            }

            state = s.Clone();
        }
        catch (JsonException ex)
        {
            _raiseError("Ignored a desired-state delta from the server that is not JSON.", ex);
            return;
        }

        await handler(new DesiredStateDelta(version, state), stopping).ConfigureAwait(false);
    }

    private sealed record Delivery(MqttConnection Connection, string Topic, byte[] Payload, bool Retain, byte QoS, ushort PacketId);
}

using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Relay.DeviceClient.Internal;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient;

public sealed partial class RelayDeviceClient
{
    private readonly ConcurrentDictionary<string, Func<DeviceCommand, CancellationToken, Task<CommandResult>>> _handlers = new(StringComparer.Ordinal);
    private readonly CommandMemory _commandMemory;
    private readonly SemaphoreSlim _commandSlots;
    private readonly HashSet<Task> _commandTasks = [];

    /// <summary>
    /// Registers the handler for commands named <paramref name="name"/> (replacing an earlier one). It runs at
    /// most once per command id; its token is canceled when the command's expiresAt passes or at StopAsync.
    /// </summary>
    public void OnCommand(string name, Func<DeviceCommand, CancellationToken, Task<CommandResult>> handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handler);
        _handlers[name] = handler;
    }

    private async ValueTask<string?> OnPublishAsync(MqttConnection connection, MqttFrame frame)
    {
        var decode = MqttPacketReader.ReadPublish(frame, connection.Version, out var publish);
        if (decode != MqttDecodeError.None)
        {
            return ProtocolFault($"Bad PUBLISH from the server: {decode}.");
        }

        var isCommand = publish.Topic.Length == _commandsTopic.Length && SequenceEquals(publish.Topic, _commandsTopic);
        if (!isCommand && TryRouteRendezvous(publish.Topic, publish.Payload))
        {
            await AckAsync(connection, publish.QoS, publish.PacketId).ConfigureAwait(false);
            return null;
        }

        if (!isCommand)
        {
            // Not ours to handle (a wider subscription of a persistent session): acknowledge and drop.
            await AckAsync(connection, publish.QoS, publish.PacketId).ConfigureAwait(false);
            return null;
        }

        if (publish.Payload.Length > _options.MaxPacketSize)
        {
            return ProtocolFault("Command larger than MaxPacketSize.");
        }

        // The ownership boundary: the frame is a view of the read buffer, the command outlives it.
        var body = publish.Payload.ToArray();
        var responseTopic = publish.Properties.HasResponseTopic ? publish.Properties.ResponseTopic.ToArray() : null;
        var correlation = publish.Properties.HasCorrelationData ? publish.Properties.CorrelationData.ToArray() : null;
        var qos = publish.QoS;
        var packetId = publish.PacketId;
        if (qos == 2)
        {
            // QoS 2 (§4.3.3): PUBREC now; the command is deduplicated by id, so a resend before PUBREL is harmless.
            await connection.SendAckAsync(MqttPacketType.PubRec, packetId, connection.Closed).ConfigureAwait(false);
            qos = 0;
        }

        if (!TryParseCommand(body, out var id, out var name, out var payload, out var payloadBytes, out var expiresAt, out var problem))
        {
            RaiseError($"Ignored a malformed command from the server: {problem}", null);
            await AckAsync(connection, qos, packetId).ConfigureAwait(false);
            return null;
        }

        CommandEntry entry;
        bool isNew;
        byte[]? republish = null;
        lock (_commandMemory.Gate)
        {
            var existing = _commandMemory.Find(id);
            isNew = existing is null;
            entry = existing ?? _commandMemory.AddRunning(id);
            entry.Deliveries++;
            if (!isNew)
            {
                Interlocked.Increment(ref _duplicates);
                _logger.LogInformation("Command {Id} arrived again ({State}); not running it twice", id, entry.Answered ? "answered" : "running");
                republish = entry.Answered ? entry.ResultBody : null;
            }

            if (!entry.Answered && qos > 0)
            {
                entry.PendingAcks.Add((connection, packetId));
            }
        }

        if (republish is not null)
        {
            // docs/push.md "Duplicates": answer again with the same result instead of acting twice.
            PublishResult(entry.ResultTopic, republish, entry.CorrelationData);
            await AckAsync(connection, qos, packetId).ConfigureAwait(false);
            return null;
        }

        if (isNew)
        {
            entry.ResultTopic = responseTopic ?? Encoding.UTF8.GetBytes(_resultsTopic);
            entry.CorrelationData = correlation;
            var command = new DeviceCommand(id, name, payload, payloadBytes, expiresAt, entry.Deliveries);
            Track(RunCommandGuardedAsync(entry, command));
        }

        return null;
    }

    private void Track(Task task)
    {
        lock (_commandTasks)
        {
            _commandTasks.Add(task);
        }

        _ = task.ContinueWith(
            t =>
            {
                lock (_commandTasks)
                {
                    _commandTasks.Remove(t);
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    private async Task RunCommandGuardedAsync(CommandEntry entry, DeviceCommand command)
    {
        try
        {
            await RunCommandAsync(entry, command).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // No unobserved task: a fault here is reported, never thrown into the host.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Abandon(entry);
            RaiseError($"Command {command.Id} ({command.Name}) could not be completed.", ex);
        }
    }

    private async Task RunCommandAsync(CommandEntry entry, DeviceCommand command)
    {
        var stop = _stop.Token;
        try
        {
            await _commandSlots.WaitAsync(stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Abandon(entry);
            return;
        }

        CommandResult result;
        try
        {
            result = await ExecuteAsync(command, stop).ConfigureAwait(false);
        }
        finally
        {
            _commandSlots.Release();
        }

        if (stop.IsCancellationRequested && result.Error == StoppedError)
        {
            // Not answered and not acknowledged: the server delivers it again after a restart.
            Abandon(entry);
            return;
        }

        var body = ResultBody(command.Id, result);
        List<(MqttConnection Connection, ushort PacketId)> acks;
        lock (_commandMemory.Gate)
        {
            entry.ResultBody = body;
            try
            {
                _commandMemory.MarkAnswered(entry);
            }
            catch (IOException ex)
            {
                RaiseError($"Could not save command state to {_options.Commands.StateFilePath}.", ex);
            }

            acks = [.. entry.PendingAcks];
            entry.PendingAcks.Clear();
        }

        Interlocked.Increment(ref _commandsExecuted);
        PublishResult(entry.ResultTopic, body, entry.CorrelationData);

        // The PUBACK marks the command delivered (docs/push.md); sending it after the result is queued means
        // a crash before this point gets the command redelivered instead of lost.
        foreach (var (connection, packetId) in acks)
        {
            // Only the connection the PUBLISH came on knows its packet id; a dead one's delivery comes again (DUP).
            if (!connection.Closed.IsCancellationRequested)
            {
                try
                {
                    await connection.SendAckAsync(MqttPacketType.PubAck, packetId, connection.Closed).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or System.Net.WebSockets.WebSocketException)
                {
                    // The server resends it (DUP) after the reconnect; it is then a duplicate and is answered from memory.
                }
            }
        }
    }

    private void Abandon(CommandEntry entry)
    {
        lock (_commandMemory.Gate)
        {
            _commandMemory.Forget(entry);
        }
    }

    private const string StoppedError = "stopped";

    private static readonly TimeSpan MaxExpiryTimer = TimeSpan.FromDays(30);

    private async Task<CommandResult> ExecuteAsync(DeviceCommand command, CancellationToken stop)
    {
        if (command.ExpiresAt is { } expiresAt && _time.GetUtcNow() >= expiresAt)
        {
            _logger.LogInformation("Command {Id} ({Name}) expired before it ran", command.Id, command.Name);
            return CommandResult.Failure("expired");
        }

        if (!_handlers.TryGetValue(command.Name, out var handler))
        {
            return CommandResult.Failure($"unknown command \"{command.Name}\"");
        }

        // Timers take at most about 49 days; an expiry further out than MaxExpiryTimer is not timed (a handler
        // does not run that long), and one closer is canceled on the TimeProvider when it passes.
        using var expiry = command.ExpiresAt is { } at && at - _time.GetUtcNow() < MaxExpiryTimer
            ? new CancellationTokenSource(at - _time.GetUtcNow(), _time)
            : new CancellationTokenSource();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(expiry.Token, stop);
        try
        {
            var result = await handler(command, linked.Token).ConfigureAwait(false);
            return result ?? CommandResult.Failure("the handler returned no result");
        }
        catch (OperationCanceledException) when (expiry.IsCancellationRequested)
        {
            return CommandResult.Failure("expired");
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            return CommandResult.Failure(StoppedError);
        }
#pragma warning disable CA1031 // A handler's exception becomes a failed result, never the host's problem.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RaiseError($"The handler of command {command.Id} ({command.Name}) threw.", ex);
            return CommandResult.Failure(ex.Message);
        }
        finally
        {
            if (expiry.IsCancellationRequested)
            {
                _logger.LogInformation("Command {Id} ({Name}) expired while it ran", command.Id, command.Name);
            }
        }
    }

    /// <summary>Results go through the offline queue (or straight out when connected), QoS 1.</summary>
    private void PublishResult(byte[] topic, byte[] body, byte[]? correlation)
    {
        var message = new OutgoingMessage(topic, body, 1, false, correlation, "application/json");
        var connection = _connection;
        if (connection is null || _queue.Count > 0)
        {
            Enqueue(message);
            return;
        }

        Track(SendResultAsync(connection, message));
    }

    private async Task SendResultAsync(MqttConnection connection, OutgoingMessage message)
    {
        try
        {
            await SendAsync(connection, message, waitForAck: false, _stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _queue.Persist(message);
        }
    }

    private static async ValueTask AckAsync(MqttConnection connection, byte qos, ushort packetId)
    {
        if (qos == 1)
        {
            await connection.SendAckAsync(MqttPacketType.PubAck, packetId, connection.Closed).ConfigureAwait(false);
        }
    }

    /// <summary>{"id","status":"succeeded"|"failed","payload"} (docs/push.md "Results").</summary>
    private static byte[] ResultBody(string id, CommandResult result)
    {
        var buffer = new ArrayBufferWriter<byte>(128);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("id", id);
            w.WriteString("status", result.Succeeded ? "succeeded" : "failed");
            if (result.Succeeded)
            {
                if (result.PayloadUtf8Json is { } payload)
                {
                    w.WritePropertyName("payload");
                    w.WriteRawValue(payload);
                }
            }
            else
            {
                w.WriteStartObject("payload");
                w.WriteString("error", result.Error);
                if (result.PayloadUtf8Json is { } details)
                {
                    w.WritePropertyName("details");
                    w.WriteRawValue(details);
                }

                w.WriteEndObject();
            }

            w.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>The command body of docs/push.md: id, name, payload | payloadBase64, expiresAt.</summary>
    private static bool TryParseCommand(byte[] body, out string id, out string name, out JsonElement payload, out byte[]? payloadBytes, out DateTimeOffset? expiresAt, out string problem)
    {
        id = name = problem = string.Empty;
        payload = default;
        payloadBytes = null;
        expiresAt = null;
        try
        {
            using var document = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 64 });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("id", out var idElement) || idElement.ValueKind != JsonValueKind.String
                || !root.TryGetProperty("name", out var nameElement) || nameElement.ValueKind != JsonValueKind.String)
            {
                problem = "it needs string \"id\" and \"name\" properties.";
                return false;
            }

            id = idElement.GetString()!;
            name = nameElement.GetString()!;
            payload = root.TryGetProperty("payload", out var p) ? p.Clone() : default;
            if (root.TryGetProperty("payloadBase64", out var b64) && b64.ValueKind == JsonValueKind.String)
            {
                if (!b64.TryGetBytesFromBase64(out payloadBytes))
                {
                    problem = $"command {id}: payloadBase64 is not base64.";
                    return false;
                }
            }

            if (root.TryGetProperty("expiresAt", out var e) && e.ValueKind == JsonValueKind.String)
            {
                if (!DateTimeOffset.TryParse(e.GetString(), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at))
                {
                    problem = $"command {id}: expiresAt is not an ISO-8601 time.";
                    return false;
                }

                expiresAt = at;
            }

            if (payload.ValueKind == JsonValueKind.Undefined)
            {
                using var nullDocument = JsonDocument.Parse("null"u8.ToArray());
                payload = nullDocument.RootElement.Clone();
            }

            return true;
        }
        catch (JsonException ex)
        {
            problem = "it is not JSON: " + ex.Message;
            return false;
        }
    }

    private static bool SequenceEquals(ReadOnlySequence<byte> sequence, ReadOnlySpan<byte> expected)
    {
        if (sequence.IsSingleSegment)
        {
            return sequence.FirstSpan.SequenceEqual(expected);
        }

        Span<byte> copy = stackalloc byte[expected.Length];
        sequence.CopyTo(copy);
        return copy.SequenceEqual(expected);
    }
}

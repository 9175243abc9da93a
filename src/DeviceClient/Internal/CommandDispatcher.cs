using System.Buffers;
using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// The command plane of the device (docs/push.md): runs each command delivered on <c>devices/{id}/commands</c>
/// at most once per id on its registered handler (at most MaxConcurrentCommands at a time, canceled when its
/// expiresAt passes or the client stops), publishes the result, and acknowledges the delivery only once the
/// result is on its way. A command that arrives again is answered from <see cref="CommandMemory"/>.
/// </summary>
internal sealed class CommandDispatcher
{
    private const string StoppedError = "stopped";

    // Timers take at most about 49 days; see ExecuteAsync.
    private static readonly TimeSpan MaxExpiryTimer = TimeSpan.FromDays(30);

    private readonly ConcurrentDictionary<string, Func<DeviceCommand, CancellationToken, Task<CommandResult>>> _handlers = new(StringComparer.Ordinal);
    private readonly DeviceClientOptions _options;
    private readonly MqttClientCore _mqtt;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly BackgroundTasks _work;
    private readonly Action<string, Exception?> _raiseError;
    private readonly CommandMemory _memory;
    private readonly SemaphoreSlim _slots;
    private readonly string _resultsTopic;

    private long _executed;
    private long _duplicates;

    /// <summary>Creates the dispatcher and loads the remembered results (CommandOptions.StateFilePath).</summary>
    public CommandDispatcher(DeviceClientOptions options, MqttClientCore mqtt, TimeProvider time, ILogger logger, BackgroundTasks work, Action<string, Exception?> raiseError)
    {
        _options = options;
        _mqtt = mqtt;
        _time = time;
        _logger = logger;
        _work = work;
        _raiseError = raiseError;
        _resultsTopic = $"devices/{options.DeviceId}/results";
        _memory = new CommandMemory(options.Commands.RememberedResults, options.Commands.StateFilePath);
        _slots = new SemaphoreSlim(Math.Max(1, options.Commands.MaxConcurrentCommands));
        _memory.Load();
    }

    /// <summary>Commands whose handler ran, or that were answered without one (unknown, expired).</summary>
    public long Executed => Interlocked.Read(ref _executed);

    /// <summary>Deliveries of a command that had arrived before.</summary>
    public long Duplicates => Interlocked.Read(ref _duplicates);

    public void Register(string name, Func<DeviceCommand, CancellationToken, Task<CommandResult>> handler) => _handlers[name] = handler;

    /// <summary>A PUBLISH on the commands topic; returns a protocol fault, or null.</summary>
    public async ValueTask<string?> OnDeliveryAsync(MqttConnection connection, MqttPublish publish)
    {
        if (publish.Payload.Length > _options.MaxPacketSize)
        {
            return "Command larger than MaxPacketSize.";
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

        if (!CommandCodec.TryParseCommand(body, out var id, out var name, out var payload, out var payloadBytes, out var expiresAt, out var problem))
        {
            _raiseError($"Ignored a malformed command from the server: {problem}", null);
            await connection.AcknowledgeAsync(qos, packetId).ConfigureAwait(false);
            return null;
        }

        CommandEntry entry;
        bool isNew;
        byte[]? republish = null;
        lock (_memory.Gate)
        {
            var existing = _memory.Find(id);
            isNew = existing is null;
            entry = existing ?? _memory.AddRunning(id);
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
            await connection.AcknowledgeAsync(qos, packetId).ConfigureAwait(false);
            return null;
        }

        if (isNew)
        {
            entry.ResultTopic = responseTopic ?? Encoding.UTF8.GetBytes(_resultsTopic);
            entry.CorrelationData = correlation;
            var command = new DeviceCommand(id, name, payload, payloadBytes, expiresAt, entry.Deliveries);
            _work.Track(RunGuardedAsync(entry, command));
        }

        return null;
    }

    private async Task RunGuardedAsync(CommandEntry entry, DeviceCommand command)
    {
        try
        {
            await RunAsync(entry, command).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // No unobserved task: a fault here is reported, never thrown into the host.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Abandon(entry);
            _raiseError($"Command {command.Id} ({command.Name}) could not be completed.", ex);
        }
    }

    private async Task RunAsync(CommandEntry entry, DeviceCommand command)
    {
        var stop = _mqtt.Stopping;
        try
        {
            await _slots.WaitAsync(stop).ConfigureAwait(false);
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
            _slots.Release();
        }

        if (stop.IsCancellationRequested && result.Error == StoppedError)
        {
            // Not answered and not acknowledged: the server delivers it again after a restart.
            Abandon(entry);
            return;
        }

        var body = CommandCodec.ResultBody(command.Id, result);
        List<(MqttConnection Connection, ushort PacketId)> acks;
        lock (_memory.Gate)
        {
            entry.ResultBody = body;
            try
            {
                _memory.MarkAnswered(entry);
            }
            catch (IOException ex)
            {
                _raiseError($"Could not save command state to {_options.Commands.StateFilePath}.", ex);
            }

            acks = [.. entry.PendingAcks];
            entry.PendingAcks.Clear();
        }

        Interlocked.Increment(ref _executed);
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
        lock (_memory.Gate)
        {
            _memory.Forget(entry);
        }
    }

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
            _raiseError($"The handler of command {command.Id} ({command.Name}) threw.", ex);
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

    /// <summary>Results go out QoS 1, through the offline queue when offline (or when messages wait there).</summary>
    private void PublishResult(byte[] topic, byte[] body, byte[]? correlation) =>
        _mqtt.Post(new OutgoingMessage(topic, body, 1, false, correlation, "application/json"));
}

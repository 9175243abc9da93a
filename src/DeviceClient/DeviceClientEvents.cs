using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient;

/// <summary>The connection state changed.</summary>
public sealed class DeviceConnectionStateChangedEventArgs : EventArgs
{
    internal DeviceConnectionStateChangedEventArgs(DeviceConnectionState previous, DeviceConnectionState current, Exception? error, MqttProtocolVersion? protocolVersion)
    {
        Previous = previous;
        Current = current;
        Error = error;
        ProtocolVersion = protocolVersion;
    }

    /// <summary>The state before.</summary>
    public DeviceConnectionState Previous { get; }

    /// <summary>The state now.</summary>
    public DeviceConnectionState Current { get; }

    /// <summary>Why the connection ended or failed, when it did so because of a fault.</summary>
    public Exception? Error { get; }

    /// <summary>The MQTT version of the connection (when <see cref="Current"/> is Connected).</summary>
    public MqttProtocolVersion? ProtocolVersion { get; }
}

/// <summary>A fault the client handled (it never throws these into the host).</summary>
public sealed class DeviceClientErrorEventArgs : EventArgs
{
    internal DeviceClientErrorEventArgs(string message, Exception? exception)
    {
        Message = message;
        Exception = exception;
    }

    /// <summary>What went wrong, for people.</summary>
    public string Message { get; }

    /// <summary>The exception behind it, if any.</summary>
    public Exception? Exception { get; }
}

/// <summary>A snapshot of the client's counters.</summary>
public sealed class DeviceClientStatistics
{
    /// <summary>Connection attempts (transport opened or not).</summary>
    public long ConnectAttempts { get; init; }

    /// <summary>Successful connections after the first one.</summary>
    public long Reconnects { get; init; }

    /// <summary>Messages waiting in the offline queue now.</summary>
    public long QueuedMessages { get; init; }

    /// <summary>Messages the offline queue dropped because it was full.</summary>
    public long DroppedMessages { get; init; }

    /// <summary>PUBLISHes sent (resends included).</summary>
    public long PublishedMessages { get; init; }

    /// <summary>QoS 1 PUBLISHes resent with DUP after a reconnect.</summary>
    public long ResentMessages { get; init; }

    /// <summary>Commands whose handler ran (or that were answered without one: unknown, expired).</summary>
    public long CommandsExecuted { get; init; }

    /// <summary>Commands that arrived again after they were answered or while they ran.</summary>
    public long DuplicateCommands { get; init; }

    /// <summary>Connections closed because the server sent something malformed or broke the protocol.</summary>
    public long ProtocolErrors { get; init; }
}

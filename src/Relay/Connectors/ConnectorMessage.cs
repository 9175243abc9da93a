namespace Relay.Server.Connectors;

/// <summary>One accepted PUBLISH on its way to a connector's target. Owns its payload (the broker's copy).</summary>
internal sealed record ConnectorMessage(string ClientId, string Topic, ReadOnlyMemory<byte> Payload, byte QoS, bool Retain, DateTimeOffset ReceivedAt)
{
    /// <summary>What the message weighs in a memory buffer: UTF-16 strings and the payload, plus a fixed overhead.</summary>
    public long Weight => 64L + ((ClientId.Length + Topic.Length) * 2L) + Payload.Length;
}

/// <summary>A target refused a batch for good (an HTTP 4xx other than 408/429): retrying cannot help, so it is dropped and counted.</summary>
internal sealed class ConnectorRejectedException(string message) : Exception(message);

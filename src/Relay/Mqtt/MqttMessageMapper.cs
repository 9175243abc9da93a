using System.Buffers;
using System.Text;
using System.Text.Unicode;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

/// <summary>
/// Between the wire and <see cref="StoredMessage"/>: the properties an application message carries to its
/// subscribers (MQTT 5.0 §3.3.2.3) copied out of a received packet, and back into the PUBLISH that forwards it.
/// </summary>
internal static class MqttMessageMapper
{
    /// <summary>When a message with these properties expires (§3.3.2.3.3); null for 3.1.1 or no Message Expiry Interval.</summary>
    public static DateTimeOffset? ExpiresAt(MqttProtocolVersion version, in MqttProperties properties, TimeProvider time) =>
        version == MqttProtocolVersion.V500 && properties.MessageExpiryInterval is { } seconds
            ? time.GetUtcNow().AddSeconds(seconds)
            : null;

    /// <summary>The properties an application message carries to subscribers (§3.3.2.3), copied out of the packet; null when there are none.</summary>
    public static MqttMessageProperties? ReadMessageProperties(MqttProtocolVersion version, in MqttProperties properties)
    {
        if (version != MqttProtocolVersion.V500 || properties.IsEmpty)
        {
            return null;
        }

        List<KeyValuePair<string, string>>? user = null;
        if (properties.UserPropertyCount > 0)
        {
            user = new(properties.UserPropertyCount);
            foreach (var (name, value) in properties.GetUserProperties())
            {
                user.Add(new(Encoding.UTF8.GetString(name), Encoding.UTF8.GetString(value)));
            }
        }

        var result = new MqttMessageProperties(
            properties.PayloadFormatIndicator,
            properties.HasContentType ? Encoding.UTF8.GetString(properties.ContentType) : null,
            properties.HasResponseTopic ? Encoding.UTF8.GetString(properties.ResponseTopic) : null,
            properties.HasCorrelationData ? properties.CorrelationData.ToArray() : null,
            user);
        return result.PayloadFormatIndicator is null && result.ContentType is null && result.ResponseTopic is null && result.CorrelationData is null && user is null
            ? null
            : result;
    }

    /// <summary>The v5 properties of the PUBLISH that forwards <paramref name="outgoing"/>.</summary>
    public static void WritePublishProperties(ref MqttPublishProperties properties, MqttOutgoing outgoing, TimeProvider time)
    {
        var message = outgoing.Message;
        if (message.ExpiresAt is { } expires)
        {
            // [MQTT-3.3.2-6]: the interval forwarded is what is left of it.
            var left = Math.Max(1, (long)Math.Ceiling((expires - time.GetUtcNow()).TotalSeconds));
            properties.MessageExpiryInterval = (uint)Math.Min(left, uint.MaxValue);
        }

        if (message.Properties is { } p)
        {
            // [MQTT-3.3.2-16..20]: forwarded unchanged.
            properties.PayloadFormatIndicator = p.PayloadFormatIndicator;
            properties.ContentType = p.ContentType;
            properties.ResponseTopic = p.ResponseTopic;
            if (p.CorrelationData is { } correlation)
            {
                properties.CorrelationData = correlation;
                properties.HasCorrelationData = true;
            }

            properties.UserProperties = p.UserProperties;
        }

        if (outgoing.SubscriptionIdentifiers is { } ids)
        {
            properties.SubscriptionIdentifiers = ids;
        }
    }

    /// <summary>Whether a payload is valid UTF-8 (Payload Format Indicator 1 promises it, [MQTT-3.3.2-4]).</summary>
    public static bool IsUtf8(in ReadOnlySequence<byte> payload)
    {
        if (payload.IsSingleSegment)
        {
            return Utf8.IsValid(payload.FirstSpan);
        }

        var copy = ArrayPool<byte>.Shared.Rent((int)payload.Length);
        try
        {
            payload.CopyTo(copy);
            return Utf8.IsValid(copy.AsSpan(0, (int)payload.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }
}

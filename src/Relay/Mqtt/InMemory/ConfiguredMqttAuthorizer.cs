using Relay.Protocol.Mqtt;

namespace Relay.Mqtt.InMemory;

/// <summary>
/// The simple ACL: a device is confined to <c>devices/{id}/#</c> plus its grants; a service account has its
/// grants; anonymous and external clients may do anything when no <c>Relay:Mqtt:Acl</c> rules exist
/// (a lab broker), otherwise the first matching rule decides and no match denies.
/// </summary>
internal sealed class ConfiguredMqttAuthorizer(MqttOptions options) : IMqttAuthorizer
{
    private const string DevicePrefix = "devices/";

    public bool CanPublish(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic) => Decide(identity, clientId, topic, MqttAction.Publish);

    public bool CanSubscribe(MqttIdentity identity, string clientId, ReadOnlySpan<char> topicFilter) => Decide(identity, clientId, topicFilter, MqttAction.Subscribe);

    private bool Decide(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic, MqttAction action)
    {
        switch (identity.Kind)
        {
            case MqttPrincipalKind.Device:
                if (IsUnderDevice(topic, identity.Name))
                {
                    return true;
                }

                return Granted(identity.Grants, topic, action);
            case MqttPrincipalKind.Service:
                return Granted(identity.Grants, topic, action);
            default:
                return options.Acl.Count == 0 || Rules(identity, clientId, topic, action);
        }
    }

    // devices/{id} itself, or anything below it: a filter below it can only match topics below it.
    private static bool IsUnderDevice(ReadOnlySpan<char> topic, string id) =>
        topic.StartsWith(DevicePrefix, StringComparison.Ordinal)
        && topic[DevicePrefix.Length..].StartsWith(id, StringComparison.Ordinal)
        && (topic.Length == DevicePrefix.Length + id.Length || topic[DevicePrefix.Length + id.Length] == '/');

    private static bool Granted(IReadOnlyList<MqttGrant> grants, ReadOnlySpan<char> topic, MqttAction action)
    {
        for (var i = 0; i < grants.Count; i++)
        {
            if ((grants[i].Actions & action) != 0 && Covers(grants[i].TopicFilter, topic))
            {
                return true;
            }
        }

        return false;
    }

    private bool Rules(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic, MqttAction action)
    {
        foreach (var rule in options.Acl)
        {
            var ruleAction = rule.Action.ToLowerInvariant() switch
            {
                "publish" => MqttAction.Publish,
                "subscribe" => MqttAction.Subscribe,
                _ => MqttAction.All,
            };
            if ((ruleAction & action) == 0 || !PatternMatches(rule.Username, identity.Name) || !PatternMatches(rule.ClientId, clientId))
            {
                continue;
            }

            var filter = rule.Topic.Replace("%u", identity.Name, StringComparison.Ordinal).Replace("%c", clientId, StringComparison.Ordinal);
            if (Covers(filter, topic))
            {
                return string.Equals(rule.Permission, "allow", StringComparison.OrdinalIgnoreCase);
            }
        }

        return false;
    }

    /// <summary>
    /// Whether every topic <paramref name="requested"/> can match is also matched by <paramref name="grant"/>
    /// (§4.7): for a topic name this is plain matching; a requested '+' needs '+' or '#' in the grant, and a
    /// requested '#' needs '#'.
    /// </summary>
    internal static bool Covers(ReadOnlySpan<char> grant, ReadOnlySpan<char> requested)
    {
        if (!requested.ContainsAny('+', '#'))
        {
            return MqttTopic.Matches(grant, requested);
        }

        while (true)
        {
            var grantSlash = grant.IndexOf('/');
            var grantLevel = grantSlash < 0 ? grant : grant[..grantSlash];
            if (grantLevel is "#")
            {
                return true;
            }

            var requestedSlash = requested.IndexOf('/');
            var requestedLevel = requestedSlash < 0 ? requested : requested[..requestedSlash];
            if (requestedLevel is "#")
            {
                return false;
            }

            if (grantLevel is not "+" && (requestedLevel is "+" || !grantLevel.SequenceEqual(requestedLevel)))
            {
                return false;
            }

            if (requestedSlash < 0)
            {
                // "a/#" covers "a" ('#' includes the parent level, §4.7.1.2).
                return grantSlash < 0 || grant[(grantSlash + 1)..] is "#";
            }

            if (grantSlash < 0)
            {
                return false;
            }

            grant = grant[(grantSlash + 1)..];
            requested = requested[(requestedSlash + 1)..];
        }
    }

    private static bool PatternMatches(string? pattern, string value) => pattern switch
    {
        null or "*" => true,
        _ when pattern.EndsWith('*') => value.StartsWith(pattern[..^1], StringComparison.Ordinal),
        _ => string.Equals(pattern, value, StringComparison.Ordinal),
    };
}

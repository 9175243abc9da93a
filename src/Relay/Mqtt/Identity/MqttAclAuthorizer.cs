using Relay.Server.Hosting;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// The MQTT ACL. Per PUBLISH and per SUBSCRIBE filter, in order:
/// <list type="number">
/// <item>the configured rules (<c>Relay:Mqtt:Acl</c>): the first whose username, client-id, action and
/// topic match decides, allow or deny;</item>
/// <item>the identity's own grants: a device may use <c>devices/{id}/#</c> plus its extra grants, a
/// service account its configured grants; anonymous clients, when no rules are configured, every topic
/// outside <c>devices/#</c>; hook-authenticated clients nothing;</item>
/// <item>otherwise deny.</item>
/// </list>
/// For SUBSCRIBE an allow must <em>cover</em> the requested filter (every topic it can match), while a
/// deny applies as soon as the filters <em>overlap</em> (some topic matches both): a subscription that
/// could receive one denied topic is denied. Rules are compiled once; a check allocates nothing.
/// </summary>
internal sealed class MqttAclAuthorizer : IMqttAuthorizer
{
    private const string DeviceGrant = "devices/%u/#";
    private const string DevicesSubtree = "devices/#";

    private readonly CompiledRule[] _rules;
    private readonly MqttIdentityMetrics _metrics;

    public MqttAclAuthorizer(MqttOptions options, MqttIdentityMetrics metrics)
        : this(Compile(options), metrics)
    {
    }

    private MqttAclAuthorizer(CompiledRule[] rules, MqttIdentityMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        _rules = rules;
        _metrics = metrics;
    }

    /// <summary>Validates and compiles <c>Relay:Mqtt:Acl</c>; throws <see cref="RelayConfigurationException"/> naming the bad key.</summary>
    public static CompiledRule[] Compile(MqttOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var rules = new CompiledRule[options.Acl.Count];
        for (var i = 0; i < rules.Length; i++)
        {
            var rule = options.Acl[i];
            var key = $"{MqttOptions.SectionName}:Acl:{i}";
            var allow = rule.Permission switch
            {
                MqttAclPermission.Allow => true,
                MqttAclPermission.Deny => false,
                _ => throw new RelayConfigurationException($"{key}:Permission: must be {StrictBinder.Choices(typeof(MqttAclPermission))} (was '{rule.Permission}')"),
            };
            var action = rule.Action switch
            {
                MqttAclAction.Publish => MqttAction.Publish,
                MqttAclAction.Subscribe => MqttAction.Subscribe,
                MqttAclAction.All => MqttAction.All,
                _ => throw new RelayConfigurationException($"{key}:Action: must be {StrictBinder.Choices(typeof(MqttAclAction))} (was '{rule.Action}')"),
            };
            if (!MqttTopicMatcher.IsValidFilter(rule.Topic))
            {
                throw new RelayConfigurationException($"{key}:Topic: '{rule.Topic}' is not a valid MQTT topic filter");
            }

            rules[i] = new CompiledRule(allow, action, new NamePattern(rule.Username), new NamePattern(rule.ClientId), rule.Topic);
        }

        return rules;
    }

    /// <summary>Creates the authorizer from rules already compiled (and so validated) at startup.</summary>
    public static MqttAclAuthorizer FromCompiled(CompiledRule[] rules, MqttIdentityMetrics metrics) => new(rules, metrics);

    public bool CanPublish(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic)
    {
        ArgumentNullException.ThrowIfNull(identity);
        ArgumentNullException.ThrowIfNull(clientId);
        // A wildcard in a PUBLISH topic is a protocol error [MQTT-3.3.2-2]; never let it match a grant.
        var allowed = MqttTopicMatcher.IsValidTopic(topic) && Decide(identity, clientId, topic, MqttAction.Publish);
        if (!allowed)
        {
            _metrics.AclDenied(MqttAction.Publish);
        }

        return allowed;
    }

    public bool CanSubscribe(MqttIdentity identity, string clientId, ReadOnlySpan<char> topicFilter)
    {
        ArgumentNullException.ThrowIfNull(identity);
        ArgumentNullException.ThrowIfNull(clientId);
        var allowed = MqttTopicMatcher.IsValidFilter(topicFilter) && Decide(identity, clientId, topicFilter, MqttAction.Subscribe);
        if (!allowed)
        {
            _metrics.AclDenied(MqttAction.Subscribe);
        }

        return allowed;
    }

    private bool Decide(MqttIdentity identity, string clientId, ReadOnlySpan<char> target, MqttAction action)
    {
        var substitution = new MqttSubstitution(identity.Name, clientId);
        foreach (var rule in _rules)
        {
            if ((rule.Actions & action) == 0 || !rule.Username.Matches(identity.Name) || !rule.ClientId.Matches(clientId))
            {
                continue;
            }

            var hit = action == MqttAction.Publish
                ? MqttTopicMatcher.Matches(rule.Topic, target, substitution)
                : rule.Allow
                    ? MqttTopicMatcher.Covers(rule.Topic, target, substitution)
                    : MqttTopicMatcher.Overlaps(rule.Topic, target, substitution);
            if (hit)
            {
                return rule.Allow;
            }
        }

        switch (identity.Kind)
        {
            case MqttPrincipalKind.Device:
                // %u is the device id: the authenticator made it the identity's name.
                return Granted(DeviceGrant, MqttAction.All, target, action, substitution) || AnyGrant(identity.Grants, target, action, substitution);
            case MqttPrincipalKind.Service:
                return AnyGrant(identity.Grants, target, action, substitution);
            case MqttPrincipalKind.Anonymous when _rules.Length == 0:
                // A lab broker with no rules (AllowAnonymous on) works like Mosquitto's, except that the
                // devices' subtrees stay closed: an anonymous client must not command or watch a device.
                return action == MqttAction.Publish
                    ? !MqttTopicMatcher.Matches(DevicesSubtree, target, substitution)
                    : !MqttTopicMatcher.Overlaps(DevicesSubtree, target, substitution);
            default:
                return false;
        }
    }

    private static bool AnyGrant(IReadOnlyList<MqttGrant> grants, ReadOnlySpan<char> target, MqttAction action, scoped in MqttSubstitution substitution)
    {
        for (var i = 0; i < grants.Count; i++)
        {
            var grant = grants[i];
            if (Granted(grant.TopicFilter, grant.Actions, target, action, substitution))
            {
                return true;
            }
        }

        return false;
    }

    private static bool Granted(string filter, MqttAction granted, ReadOnlySpan<char> target, MqttAction action, scoped in MqttSubstitution substitution) =>
        (granted & action) != 0 && (action == MqttAction.Publish
            ? MqttTopicMatcher.Matches(filter, target, substitution)
            : MqttTopicMatcher.Covers(filter, target, substitution));

    /// <summary>A rule after validation.</summary>
    internal sealed record CompiledRule(bool Allow, MqttAction Actions, NamePattern Username, NamePattern ClientId, string Topic);

    /// <summary>Null or <c>*</c> matches anything; a trailing <c>*</c> is a prefix match; otherwise exact (ordinal).</summary>
    internal readonly struct NamePattern
    {
        private readonly string? _text;
        private readonly bool _prefix;

        public NamePattern(string? pattern)
        {
            if (pattern is null or "*")
            {
                return;
            }

            _prefix = pattern.EndsWith('*');
            _text = _prefix ? pattern[..^1] : pattern;
        }

        public bool Matches(ReadOnlySpan<char> value) =>
            _text is null || (_prefix ? value.StartsWith(_text, StringComparison.Ordinal) : value.SequenceEqual(_text));
    }
}

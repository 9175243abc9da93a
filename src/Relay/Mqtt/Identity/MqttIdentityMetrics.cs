using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using static Relay.Server.Primitives.PrometheusText;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Meter <c>Relay.Server.Mqtt.Identity</c>: authentication outcomes, rate-limit refusals, HTTP hook calls and
/// ACL denials. Counting is an interlocked increment on a fixed slot; the observable instruments and
/// <see cref="WritePrometheus"/> read the slots (the style of <c>TurnMetrics</c>).
/// </summary>
internal sealed class MqttIdentityMetrics
{
    public const string MeterName = "Relay.Mqtt.Identity";

    // Indexed by MqttAuthOutcome.
    private static readonly string[] OutcomeNames = ["allow", "bad_credentials", "not_authorized", "rate_limited", "unavailable", "busy"];
    private static readonly string[] HookResultNames = ["allow", "deny", "unavailable"];
    private static readonly string[] ActionNames = ["publish", "subscribe"];

    private readonly long[] _outcomes = new long[OutcomeNames.Length];
    private readonly long[] _hookResults = new long[HookResultNames.Length];
    private readonly long[] _aclDenials = new long[ActionNames.Length];
    private readonly SlowHashPool? _pool;
    private long _hookAttempts;
    private long _hookErrors;

    public MqttIdentityMetrics(IMeterFactory? meterFactory = null, SlowHashPool? pool = null)
    {
        _pool = pool;
        if (meterFactory is null)
        {
            return;
        }

        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.mqtt.auth", () => Observe(_outcomes, OutcomeNames, "outcome"), "{connect}", "MQTT CONNECT authentications, by outcome.");
        meter.CreateObservableCounter("relay.mqtt.auth_hook.calls", () => Observe(_hookResults, HookResultNames, "result"), "{call}", "Authentications decided by the HTTP hook, by result.");
        meter.CreateObservableCounter("relay.mqtt.auth_hook.errors", () => Volatile.Read(ref _hookErrors), "{attempt}", "HTTP hook attempts that timed out, failed to connect or got a 5xx.");
        meter.CreateObservableCounter("relay.mqtt.acl.denials", () => Observe(_aclDenials, ActionNames, "action"), "{request}", "PUBLISH and SUBSCRIBE requests the ACL denied.");
        if (pool is not null)
        {
            meter.CreateObservableGauge("relay.mqtt.slow_hash.waiting", () => pool.Waiting, "{verification}", "PBKDF2 verifications waiting for a slot.");
            meter.CreateObservableCounter("relay.mqtt.slow_hash.runs", () => pool.Runs, "{verification}", "PBKDF2 verifications computed.");
            meter.CreateObservableCounter("relay.mqtt.slow_hash.refused", () => pool.Refused, "{verification}", "PBKDF2 verifications refused as busy (pool full or wait too long).");
        }
    }

    /// <summary>CONNECTs refused without checking because their IP was over its failure budget.</summary>
    public long RateLimitHits => Outcomes(MqttAuthOutcome.RateLimited);

    /// <summary>HTTP requests sent to the hook (each retry counts).</summary>
    public long HookAttempts => Volatile.Read(ref _hookAttempts);

    /// <summary>Hook attempts that failed: timeout, connection error, 5xx or an unreadable answer.</summary>
    public long HookErrors => Volatile.Read(ref _hookErrors);

    /// <summary>Authentications the hook decided (allow, deny or unavailable after retries).</summary>
    public long HookCalls => Volatile.Read(ref _hookResults[0]) + Volatile.Read(ref _hookResults[1]) + Volatile.Read(ref _hookResults[2]);

    public long Outcomes(MqttAuthOutcome outcome) => Volatile.Read(ref _outcomes[(int)outcome]);

    public long AclDenials(MqttAction action) => Volatile.Read(ref _aclDenials[action == MqttAction.Publish ? 0 : 1]);

    public void Authenticated(MqttAuthOutcome outcome) => Interlocked.Increment(ref _outcomes[(int)outcome]);

    public void HookAttempt() => Interlocked.Increment(ref _hookAttempts);

    public void HookError() => Interlocked.Increment(ref _hookErrors);

    /// <summary>What the hook decided: Allow, BadCredentials (deny) or Unavailable.</summary>
    public void HookResult(MqttAuthOutcome outcome) =>
        Interlocked.Increment(ref _hookResults[outcome switch { MqttAuthOutcome.Allow => 0, MqttAuthOutcome.Unavailable => 2, _ => 1 }]);

    public void AclDenied(MqttAction action) => Interlocked.Increment(ref _aclDenials[action == MqttAction.Publish ? 0 : 1]);

    public void WritePrometheus(StringBuilder output)
    {
        ArgumentNullException.ThrowIfNull(output);
        WriteFamily(output, "relay_mqtt_auth_total", "MQTT CONNECT authentications, by outcome (rate_limited: refused without checking).", "counter", Labelled(_outcomes, OutcomeNames, "outcome"));
        WriteFamily(output, "relay_mqtt_auth_hook_calls_total", "Authentications decided by the HTTP hook, by result.", "counter", Labelled(_hookResults, HookResultNames, "result"));
        WriteFamily(output, "relay_mqtt_auth_hook_attempts_total", "HTTP requests sent to the authentication hook, retries included.", "counter", [new("", HookAttempts)]);
        WriteFamily(output, "relay_mqtt_auth_hook_errors_total", "Hook attempts that timed out, failed to connect, got a 5xx or an unreadable answer.", "counter", [new("", HookErrors)]);
        WriteFamily(output, "relay_mqtt_acl_denials_total", "PUBLISH and SUBSCRIBE requests the ACL denied, by action.", "counter", Labelled(_aclDenials, ActionNames, "action"));
        if (_pool is { } pool)
        {
            WriteFamily(output, "relay_mqtt_slow_hash_waiting", "PBKDF2 verifications (person-chosen device secrets) waiting for a slot.", "gauge", [new("", pool.Waiting)]);
            WriteFamily(output, "relay_mqtt_slow_hash_runs_total", "PBKDF2 verifications computed.", "counter", [new("", pool.Runs)]);
            WriteFamily(output, "relay_mqtt_slow_hash_refused_total", "PBKDF2 verifications refused as busy: the CONNECT got server busy.", "counter", [new("", pool.Refused)]);
        }
    }
}

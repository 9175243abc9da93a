using System.Diagnostics.Metrics;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Meter <c>Relay.Mqtt.Identity</c>: HTTP hook calls and errors, ACL denials and the PBKDF2 pool. Counting is
/// an interlocked increment on a fixed slot; the observable instruments read the slots (the style of
/// <c>TurnMetrics</c>). CONNECT outcomes are <c>MqttMetrics</c>' (<c>relay.mqtt.auth</c>), counted where every
/// CONNECT passes. Without a meter factory (unit tests, a throwaway hook client) it still counts, but nothing exports it.
/// </summary>
internal sealed class MqttIdentityMetrics
{
    public const string MeterName = "Relay.Mqtt.Identity";

    private static readonly string[] HookResultNames = ["allow", "deny", "unavailable"];
    private static readonly string[] ActionNames = ["publish", "subscribe"];
    private static readonly string[] RefusalNames = ["missing", "untrusted", "expired", "usage"];

    private readonly long[] _hookResults = new long[HookResultNames.Length];
    private readonly long[] _aclDenials = new long[ActionNames.Length];
    private readonly long[] _certificateRefusals = new long[RefusalNames.Length];
    private long _hookAttempts;
    private long _hookErrors;

    public MqttIdentityMetrics(IMeterFactory? meterFactory = null, SlowHashPool? pool = null)
    {
        if (meterFactory is null)
        {
            return;
        }

        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.mqtt.auth_hook.calls", () => Labelled(_hookResults, HookResultNames, "result"), "{call}", "Authentications decided by the HTTP hook, by result.");
        meter.CreateObservableCounter("relay.mqtt.auth_hook.attempts", () => HookAttempts, "{attempt}", "HTTP requests sent to the authentication hook, retries included.");
        meter.CreateObservableCounter("relay.mqtt.auth_hook.errors", () => HookErrors, "{attempt}", "Hook attempts that timed out, failed to connect, got a 5xx or an unreadable answer.");
        meter.CreateObservableCounter("relay.mqtt.acl.denials", () => Labelled(_aclDenials, ActionNames, "action"), "{request}", "PUBLISH and SUBSCRIBE requests the ACL denied, by action.");
        meter.CreateObservableCounter("relay.mqtt.client_certificates.refused", () => Labelled(_certificateRefusals, RefusalNames, "reason"), "{handshake}", "TLS client certificates refused in the handshake: missing (Required mode), untrusted (not from the configured CA), expired, usage (no clientAuth).");
        if (pool is not null)
        {
            meter.CreateObservableGauge("relay.mqtt.slow_hash.waiting", () => pool.Waiting, "{verification}", "PBKDF2 verifications (person-chosen device secrets) waiting for a slot.");
            meter.CreateObservableCounter("relay.mqtt.slow_hash.runs", () => pool.Runs, "{verification}", "PBKDF2 verifications computed.");
            meter.CreateObservableCounter("relay.mqtt.slow_hash.refused", () => pool.Refused, "{verification}", "PBKDF2 verifications refused as busy: the CONNECT got server busy.");
        }
    }

    /// <summary>HTTP requests sent to the hook (each retry counts).</summary>
    public long HookAttempts => Volatile.Read(ref _hookAttempts);

    /// <summary>Hook attempts that failed: timeout, connection error, 5xx or an unreadable answer.</summary>
    public long HookErrors => Volatile.Read(ref _hookErrors);

    /// <summary>Authentications the hook decided (allow, deny or unavailable after retries).</summary>
    public long HookCalls => Volatile.Read(ref _hookResults[0]) + Volatile.Read(ref _hookResults[1]) + Volatile.Read(ref _hookResults[2]);

    /// <summary>Authentications the hook decided with <paramref name="outcome"/>: Allow, BadCredentials (deny) or Unavailable.</summary>
    public long HookResults(MqttAuthOutcome outcome) => Volatile.Read(ref _hookResults[HookResultSlot(outcome)]);

    public long AclDenials(MqttAction action) => Volatile.Read(ref _aclDenials[action == MqttAction.Publish ? 0 : 1]);

    public void HookAttempt() => Interlocked.Increment(ref _hookAttempts);

    public void HookError() => Interlocked.Increment(ref _hookErrors);

    /// <summary>What the hook decided: Allow, BadCredentials (deny) or Unavailable.</summary>
    public void HookResult(MqttAuthOutcome outcome) => Interlocked.Increment(ref _hookResults[HookResultSlot(outcome)]);

    public void AclDenied(MqttAction action) => Interlocked.Increment(ref _aclDenials[action == MqttAction.Publish ? 0 : 1]);

    /// <summary>Why a TLS client certificate was refused (the slot order of the metric's labels).</summary>
    public enum CertificateRefusal
    {
        Missing,
        Untrusted,
        Expired,
        Usage,
    }

    public long CertificatesRefused(CertificateRefusal reason) => Volatile.Read(ref _certificateRefusals[(int)reason]);

    public void CertificateRefused(CertificateRefusal reason) => Interlocked.Increment(ref _certificateRefusals[(int)reason]);

    private static int HookResultSlot(MqttAuthOutcome outcome) => outcome switch { MqttAuthOutcome.Allow => 0, MqttAuthOutcome.Unavailable => 2, _ => 1 };
}

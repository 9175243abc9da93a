using System.Buffers;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// The client's subscriptions (§3.8), at QoS 1, each SUBACK's codes matched to its filters in order (§3.9.3).
/// The owner's filters go in one SUBSCRIBE when a session is new: the first is required (a refusal closes the
/// connection), the others optional (<see cref="IsGranted"/>). Filters the application adds later
/// (<see cref="Add"/>) are subscribed on the live connection at once and again on any connection whose session
/// does not hold them yet. One SUBSCRIBE is in flight at a time, so one reserved packet identifier is enough.
/// </summary>
internal sealed class MqttSubscriptions(string[] filters, InflightWindow packetIds, TimeSpan timeout, TimeProvider time)
{
    /// <summary>Filters an application may add; subscriptions are few and known, this only bounds a loop's mistake.</summary>
    public const int MaxAdded = 32;

    private readonly object _gate = new();
    private readonly SemaphoreSlim _one = new(1, 1);
    private readonly List<string> _added = [];
    private readonly HashSet<string> _held = new(StringComparer.Ordinal);
    private (ushort PacketId, TaskCompletionSource<byte[]> Ack)? _pending;
    private byte[] _granted = [];

    /// <summary>Whether the server granted <paramref name="filter"/> (false before a SUBACK for it came).</summary>
    public bool IsGranted(string filter)
    {
        var index = Array.IndexOf(filters, filter);
        lock (_gate)
        {
            return index >= 0 ? index < _granted.Length && _granted[index] < 0x80 : _held.Contains(filter);
        }
    }

    /// <summary>
    /// Remembers an added filter; false when it was added before. Throws when <see cref="MaxAdded"/> are already
    /// added: the caller's mistake, told at once.
    /// </summary>
    public bool Add(string filter)
    {
        lock (_gate)
        {
            if (_added.Contains(filter) || Array.IndexOf(filters, filter) >= 0)
            {
                return false;
            }

            if (_added.Count >= MaxAdded)
            {
                throw new InvalidOperationException($"At most {MaxAdded} topic filters can be subscribed with SubscribeAsync.");
            }

            _added.Add(filter);
            return true;
        }
    }

    /// <summary>Subscribes the owner's filters on <paramref name="connection"/>; returns a fault that closes it, or null.</summary>
    public async Task<string?> SubscribeAsync(MqttConnection connection)
    {
        lock (_gate)
        {
            // A new session holds nothing we added before.
            _held.Clear();
        }

        var (codes, fault) = await SendAsync(connection, filters).ConfigureAwait(false);
        if (fault is not null)
        {
            return fault;
        }

        lock (_gate)
        {
            _granted = codes!;
        }

        return codes![0] >= 0x80 ? $"The server refused the subscription to {filters[0]}: 0x{codes[0]:X2}." : null;
    }

    /// <summary>
    /// Subscribes every added filter the server's session does not hold yet; returns the refused ones (forgotten)
    /// with their codes (not a fault: an added filter does not decide whether the connection is usable) and a fault or null.
    /// </summary>
    public async Task<(List<(string Filter, byte Code)> Refused, string? Fault)> SubscribeAddedAsync(MqttConnection connection)
    {
        string[] missing;
        lock (_gate)
        {
            missing = [.. _added.Where(f => !_held.Contains(f))];
        }

        var refused = new List<(string, byte)>();
        if (missing.Length == 0)
        {
            return (refused, null);
        }

        var (codes, fault) = await SendAsync(connection, missing).ConfigureAwait(false);
        if (fault is not null)
        {
            return (refused, fault);
        }

        lock (_gate)
        {
            for (var i = 0; i < missing.Length; i++)
            {
                var code = i < codes!.Length ? codes[i] : (byte)0x80;
                if (code < 0x80)
                {
                    _held.Add(missing[i]);
                }
                else
                {
                    // Not tried again on every connection: the caller hears of it once (an exception or an Error).
                    _added.Remove(missing[i]);
                    refused.Add((missing[i], code));
                }
            }
        }

        return (refused, null);
    }

    /// <summary>A SUBACK with at least one code; one that answers no SUBSCRIBE of ours is ignored.</summary>
    public void OnSubAck(in MqttSubAck subAck)
    {
        lock (_gate)
        {
            if (_pending is { } pending && pending.PacketId == subAck.PacketId)
            {
                pending.Ack.TrySetResult(subAck.ReasonCodes.ToArray());
            }
        }
    }

    /// <summary>The connection ended: nobody waits for its SUBACK any more.</summary>
    public void Cancel()
    {
        lock (_gate)
        {
            _pending?.Ack.TrySetCanceled();
        }
    }

    private async Task<(byte[]? Codes, string? Fault)> SendAsync(MqttConnection connection, string[] topicFilters)
    {
        await _one.WaitAsync(connection.Closed).ConfigureAwait(false);
        var ack = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        var id = packetIds.Reserve();
        lock (_gate)
        {
            _pending = (id, ack);
        }

        try
        {
            await connection.SendSubscribeAsync(id, topicFilters, connection.Closed).ConfigureAwait(false);
            return (await ack.Task.WaitAsync(timeout, time, connection.Closed).ConfigureAwait(false), null);
        }
        catch (TimeoutException)
        {
            return (null, $"No SUBACK within OperationTimeout ({timeout}).");
        }
        finally
        {
            lock (_gate)
            {
                _pending = null;
            }

            packetIds.ReleaseReserved();
            _one.Release();
        }
    }
}

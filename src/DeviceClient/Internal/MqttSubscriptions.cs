using System.Buffers;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// The client's subscriptions: every filter in one SUBSCRIBE at QoS 1 (§3.8), and the SUBACK's code per
/// filter, in order (§3.9.3). The first filter is required (a refusal closes the connection); the others
/// are optional, and <see cref="IsGranted"/> tells whether the server took them.
/// </summary>
internal sealed class MqttSubscriptions(string[] filters, InflightWindow packetIds, TimeSpan timeout, TimeProvider time)
{
    private readonly object _gate = new();
    private (ushort PacketId, TaskCompletionSource<byte> Ack)? _pending;
    private byte[] _granted = [];

    /// <summary>Whether the server granted <paramref name="filter"/> in the last SUBACK (false before one came).</summary>
    public bool IsGranted(string filter)
    {
        var index = Array.IndexOf(filters, filter);
        lock (_gate)
        {
            return index >= 0 && index < _granted.Length && _granted[index] < 0x80;
        }
    }

    /// <summary>Subscribes on <paramref name="connection"/>; returns a fault that closes it, or null.</summary>
    public async Task<string?> SubscribeAsync(MqttConnection connection)
    {
        var ack = new TaskCompletionSource<byte>(TaskCreationOptions.RunContinuationsAsynchronously);
        var id = packetIds.Reserve();
        lock (_gate)
        {
            _pending = (id, ack);
        }

        try
        {
            await connection.SendSubscribeAsync(id, filters, connection.Closed).ConfigureAwait(false);
            var granted = await ack.Task.WaitAsync(timeout, time, connection.Closed).ConfigureAwait(false);
            return granted >= 0x80 ? $"The server refused the subscription to {filters[0]}: 0x{granted:X2}." : null;
        }
        catch (TimeoutException)
        {
            return $"No SUBACK within OperationTimeout ({timeout}).";
        }
        finally
        {
            lock (_gate)
            {
                _pending = null;
            }

            packetIds.ReleaseReserved();
        }
    }

    /// <summary>A SUBACK with at least one code; one that answers no SUBSCRIBE of ours is ignored.</summary>
    public void OnSubAck(in MqttSubAck subAck)
    {
        lock (_gate)
        {
            if (_pending is { } pending && pending.PacketId == subAck.PacketId)
            {
                _granted = subAck.ReasonCodes.ToArray();
                pending.Ack.TrySetResult(_granted[0]);
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
}

using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Relay.DeviceClient.Internal;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Rendezvous;

namespace Relay.DeviceClient;

public sealed partial class RelayDeviceClient
{
    private readonly object _peersGate = new();
    private PeerRendezvous? _rendezvous;
    private byte[]? _rendezvousInTopic;
    private int _natReported;
    private volatile bool _rendezvousGranted;

    /// <summary>An incoming offer was accepted (<see cref="PeerOptions.AcceptFrom"/>) and its channel is usable; the handler owns the channel.</summary>
    public event EventHandler<PeerChannelEventArgs>? PeerConnected;

    /// <summary>
    /// Asks the server to introduce this device to <paramref name="peerId"/> (docs/rendezvous.md) and returns
    /// the channel as soon as the relayed path works (relay first); it upgrades itself to a direct path in
    /// the background when a connectivity check succeeds.
    /// </summary>
    /// <exception cref="PeerConnectException">The server refused (<c>forbidden</c>, <c>offline</c>, <c>rejected</c>, ...).</exception>
    /// <exception cref="OperationCanceledException">Not done within <see cref="PeerOptions.ConnectTimeout"/>, or canceled.</exception>
    public async Task<PeerChannel> ConnectPeerAsync(string peerId, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(peerId);
        if (!_options.Peers.Enabled)
        {
            throw new InvalidOperationException("Peer sessions are disabled (DeviceClientOptions.Peers.Enabled).");
        }

        await WaitConnectedAsync(ct).ConfigureAwait(false);
        return await Rendezvous.ConnectAsync(peerId, ct).ConfigureAwait(false);
    }

    private PeerRendezvous Rendezvous
    {
        get
        {
            lock (_peersGate)
            {
                if (_rendezvous is null)
                {
                    _rendezvous = new PeerRendezvous(_options.Peers, _time, _logger, PublishRendezvousAsync, OnPeerConnected);

                    // Normally classified since the first connect (OnRendezvousAvailable); if the server never granted
                    // the rendezvous subscription, the first use classifies the NAT for the sessions that follow.
                    ReportNatOnce();
                }

                return _rendezvous;
            }
        }
    }

    private byte[] RendezvousInTopic => _rendezvousInTopic ??= Encoding.UTF8.GetBytes($"devices/{_options.DeviceId}/rendezvous/in");

    /// <summary>
    /// Signalling goes out on the live connection only (QoS 1, completes on PUBACK): an introduction is worthless
    /// later, and it must not take a place in the bounded offline queue from the application's telemetry.
    /// </summary>
    private async Task PublishRendezvousAsync(RendezvousMessage message, CancellationToken cancellationToken)
    {
        var connection = _connection ?? throw new InvalidOperationException("Not connected to the server: rendezvous signalling is not queued.");
        var body = JsonSerializer.SerializeToUtf8Bytes(message, RendezvousJsonContext.Default.RendezvousMessage);
        var outgoing = new OutgoingMessage(Encoding.UTF8.GetBytes($"devices/{_options.DeviceId}/rendezvous/out"), body, 1, false, null, "application/json") { Transient = true };
        var done = await SendAsync(connection, outgoing, waitForAck: true, cancellationToken).ConfigureAwait(false);
        if (done is not null)
        {
            await done.WaitAsync(_options.OperationTimeout, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Routes a PUBLISH on <c>devices/{id}/rendezvous/in</c>; false when the topic is another.</summary>
    private bool TryRouteRendezvous(in ReadOnlySequence<byte> topic, in ReadOnlySequence<byte> payload)
    {
        if (!_options.Peers.Enabled || !SequenceEquals(topic, RendezvousInTopic))
        {
            return false;
        }

        // docs/rendezvous.md: a signalling body is at most 8 KiB.
        if (payload.Length > 8 * 1024)
        {
            RaiseError("Ignored a rendezvous message over 8 KiB.", null);
            return true;
        }

        Rendezvous.OnMessage(payload.IsSingleSegment ? payload.FirstSpan : payload.ToArray());
        return true;
    }

    private void OnPeerConnected(PeerChannel channel)
    {
        var handler = PeerConnected;
        if (handler is null)
        {
            // Nobody takes it: close it rather than leak a socket and an allocation.
            _ = channel.DisposeAsync().AsTask();
            return;
        }

        try
        {
            handler(this, new PeerChannelEventArgs(channel));
        }
#pragma warning disable CA1031 // A host's handler must not break the signalling.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RaiseError("A PeerConnected handler threw.", ex);
        }
    }

    /// <summary>
    /// After each connect: when the server granted <c>devices/{id}/rendezvous/in</c>, classify the NAT in the
    /// background now, so that the first <c>connect</c> or <c>answer</c> already carries <c>nat</c> (birthday
    /// probing needs it on both sides). A server without rendezvous (or one that ignores the filter) is left alone.
    /// </summary>
    private void OnRendezvousAvailable()
    {
        if (_rendezvousGranted && _options.Peers.Enabled && _options.Peers.ReportNat && Volatile.Read(ref _natReported) == 0)
        {
            _ = Rendezvous; // creating it starts the classification (ReportNatOnce)
            ReportNatOnce(); // or restarts it after a failed attempt
        }
    }

    /// <summary>Once per client (again after a failure): RFC 5780 discovery against the server's STUN, reported as a <c>nat</c> message.</summary>
    private void ReportNatOnce()
    {
        if (!_options.Peers.Enabled || !_options.Peers.ReportNat || Interlocked.Exchange(ref _natReported, 1) != 0)
        {
            return;
        }

        Track(ReportNatAsync(_stop.Token));
    }

    private async Task ReportNatAsync(CancellationToken stop)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
            timeout.CancelAfter(_options.Peers.ConnectTimeout);
            var servers = await Rendezvous.GetServersAsync(timeout.Token).ConfigureAwait(false);
            if (servers.Stun is null)
            {
                Rendezvous.NatDiscoveryEnded();
                return;
            }

            // Report the type the moment it is settled (a symmetric mapping before the filtering tests end):
            // birthday probing decides on it, and a connect waits for it only briefly.
            var settled = new TaskCompletionSource<NatType>(TaskCreationOptions.RunContinuationsAsynchronously);
            var discovery = NatBehaviorDiscovery.DiscoverAsync(servers.Stun, _options.Peers.ServerRetransmission, t => settled.TrySetResult(t), timeout.Token);
            await Task.WhenAny(settled.Task, discovery).ConfigureAwait(false);
            var type = settled.Task.IsCompleted ? await settled.Task.ConfigureAwait(false) : (await discovery.ConfigureAwait(false)).Type;
            await Rendezvous.ReportNatAsync(type, timeout.Token).ConfigureAwait(false);
            var behavior = await discovery.ConfigureAwait(false);
            _logger.LogInformation("NAT classified as {Nat} (mapping {Mapping}, filtering {Filtering})", behavior.Type, behavior.Mapping, behavior.Filtering);
        }
#pragma warning disable CA1031 // Best effort: a server without rendezvous never answers; nothing else depends on it.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            // Sessions stop waiting for it; the next connect tries again.
            Rendezvous.NatDiscoveryEnded();
            Interlocked.Exchange(ref _natReported, 0);
            _logger.LogDebug(ex, "NAT discovery did not complete");
        }
    }
}

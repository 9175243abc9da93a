using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
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

                    // The first use of rendezvous classifies the NAT (in the background) for the sessions that follow.
                    ReportNatOnce();
                }

                return _rendezvous;
            }
        }
    }

    private byte[] RendezvousInTopic => _rendezvousInTopic ??= Encoding.UTF8.GetBytes($"devices/{_options.DeviceId}/rendezvous/in");

    private Task PublishRendezvousAsync(RendezvousMessage message, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(message, RendezvousJsonContext.Default.RendezvousMessage);
        return PublishAsync($"devices/{_options.DeviceId}/rendezvous/out", body, 1, false, cancellationToken).AsTask();
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

    /// <summary>Once per client, at the first rendezvous use: RFC 5780 discovery against the server's STUN, reported as a <c>nat</c> message.</summary>
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
                return;
            }

            var behavior = await NatBehaviorDiscovery.DiscoverAsync(servers.Stun, _options.Peers.ServerRetransmission, timeout.Token).ConfigureAwait(false);
            await Rendezvous.ReportNatAsync(behavior.Type, timeout.Token).ConfigureAwait(false);
            _logger.LogInformation("NAT classified as {Nat}", behavior.Type);
        }
#pragma warning disable CA1031 // Best effort: a server without rendezvous never answers; nothing else depends on it.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Interlocked.Exchange(ref _natReported, 0);
            _logger.LogDebug(ex, "NAT discovery did not complete");
        }
    }
}

using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Rendezvous;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// Peer rendezvous over the client's MQTT connection (docs/rendezvous.md): signalling comes in on
/// <c>devices/{id}/rendezvous/in</c> and goes out on <c>devices/{id}/rendezvous/out</c>; the
/// <see cref="PeerRendezvous"/> is made on first use; the NAT is classified (RFC 5780) and reported once per client.
/// </summary>
internal sealed class RendezvousSignalling
{
    // docs/rendezvous.md: a signalling body is at most 8 KiB.
    private const int MaxMessageSize = 8 * 1024;

    private readonly PeerOptions _options;
    private readonly MqttClientCore _mqtt;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly BackgroundTasks _work;
    private readonly Action<string, Exception?> _raiseError;
    private readonly Action<PeerChannel> _onPeerConnected;
    private readonly string _inFilter;
    private readonly byte[] _outTopic;
    private readonly object _gate = new();
    private PeerRendezvous? _rendezvous;
    private int _natReported;

    public RendezvousSignalling(PeerOptions options, string deviceId, MqttClientCore mqtt, TimeProvider time, ILogger logger, BackgroundTasks work, Action<string, Exception?> raiseError, Action<PeerChannel> onPeerConnected)
    {
        _options = options;
        _mqtt = mqtt;
        _time = time;
        _logger = logger;
        _work = work;
        _raiseError = raiseError;
        _onPeerConnected = onPeerConnected;
        _inFilter = InTopic(deviceId);
        InTopicUtf8 = Encoding.UTF8.GetBytes(_inFilter);
        _outTopic = Encoding.UTF8.GetBytes($"devices/{deviceId}/rendezvous/out");
    }

    /// <summary><see cref="InTopic"/> as it appears in a PUBLISH.</summary>
    public byte[] InTopicUtf8 { get; }

    /// <summary>Where the server's signalling for <paramref name="deviceId"/> arrives.</summary>
    public static string InTopic(string deviceId) => $"devices/{deviceId}/rendezvous/in";

    private PeerRendezvous Rendezvous
    {
        get
        {
            lock (_gate)
            {
                if (_rendezvous is null)
                {
                    _rendezvous = new PeerRendezvous(_options, _time, _logger, PublishAsync, _onPeerConnected);

                    // Normally classified since the first connect (OnConnected); if the server never granted
                    // the rendezvous subscription, the first use classifies the NAT for the sessions that follow.
                    ReportNatOnce();
                }

                return _rendezvous;
            }
        }
    }

    /// <inheritdoc cref="PeerRendezvous.ConnectAsync"/>
    public Task<PeerChannel> ConnectAsync(string peerId, CancellationToken cancellationToken) => Rendezvous.ConnectAsync(peerId, cancellationToken);

    /// <summary>The payload of one PUBLISH on <see cref="InTopic"/>.</summary>
    public void OnMessage(in ReadOnlySequence<byte> payload)
    {
        if (payload.Length > MaxMessageSize)
        {
            _raiseError("Ignored a rendezvous message over 8 KiB.", null);
            return;
        }

        Rendezvous.OnMessage(payload.IsSingleSegment ? payload.FirstSpan : payload.ToArray());
    }

    /// <summary>
    /// After each connect: when the server granted the <see cref="InTopic"/> filter, classify the NAT in the background
    /// now, so that the first <c>connect</c> or <c>answer</c> already carries <c>nat</c> (birthday probing needs
    /// it on both sides). A server without rendezvous (or one that ignores the filter) is left alone.
    /// </summary>
    public void OnConnected()
    {
        if (_mqtt.IsGranted(_inFilter) && _options.ReportNat && Volatile.Read(ref _natReported) == 0)
        {
            _ = Rendezvous; // creating it starts the classification (ReportNatOnce)
            ReportNatOnce(); // or restarts it after a failed attempt
        }
    }

    /// <summary>
    /// Signalling goes out on the live connection only (QoS 1, completes on PUBACK): an introduction is worthless
    /// later, and it must not take a place in the bounded offline queue from the application's telemetry.
    /// </summary>
    private async Task PublishAsync(RendezvousMessage message, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(message, RendezvousJsonContext.Default.RendezvousMessage);
        var outgoing = new OutgoingMessage(_outTopic, body, 1, false, null, "application/json") { Transient = true };
        await _mqtt.PublishLiveAsync(outgoing, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Once per client (again after a failure): RFC 5780 discovery against the server's STUN, reported as a <c>nat</c> message.</summary>
    private void ReportNatOnce()
    {
        if (!_options.ReportNat || Interlocked.Exchange(ref _natReported, 1) != 0)
        {
            return;
        }

        _work.Track(ReportNatAsync(_mqtt.Stopping));
    }

    private async Task ReportNatAsync(CancellationToken stop)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
            timeout.CancelAfter(_options.ConnectTimeout);
            var servers = await Rendezvous.GetServersAsync(timeout.Token).ConfigureAwait(false);
            if (servers.Stun is null)
            {
                Rendezvous.NatDiscoveryEnded();
                return;
            }

            // Report the type the moment it is settled (a symmetric mapping before the filtering tests end):
            // birthday probing decides on it, and a connect waits for it only briefly.
            var settled = new TaskCompletionSource<NatType>(TaskCreationOptions.RunContinuationsAsynchronously);
            var discovery = NatBehaviorDiscovery.DiscoverAsync(servers.Stun, _options.ServerRetransmission, t => settled.TrySetResult(t), timeout.Token);
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

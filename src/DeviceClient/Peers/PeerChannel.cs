using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Peers;

/// <summary>What a <see cref="PeerChannel"/> sends its datagrams through: a <see cref="PeerSession"/>.</summary>
internal interface IPeerTransport : IAsyncDisposable
{
    PeerPath Path { get; }

    IPEndPoint? RemoteEndPoint { get; }

    ValueTask SendDatagramAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken);
}

/// <summary>
/// A message channel to one peer (docs/rendezvous.md "The channel"): each message is an MQTT PUBLISH at
/// QoS 1 in one UDP datagram, acknowledged by PUBACK, retransmitted with DUP and delivered once. It sends
/// over the TURN relay at first and switches to a direct path when a connectivity check succeeds. Every
/// datagram is sealed with an AEAD under keys derived from the session key (PeerCipher): confidential,
/// authenticated and never accepted twice, whichever path it took; anything else is dropped and counted
/// (<see cref="FramesRejected"/>, <see cref="FramesReplayed"/>, <see cref="FramesOutsideWindow"/>).
/// </summary>
public sealed class PeerChannel : IAsyncDisposable
{
    // The channel carries bytes, not topics; MQTT 3.1.1 §3.3.2.1 still wants a non-empty topic name.
    private static ReadOnlySpan<byte> Topic => "p"u8;

    private const int MaxInflight = 64;
    private const int DuplicateWindow = 1024;
    private static readonly TimeSpan MaxRetransmitTimeout = TimeSpan.FromSeconds(4);

    private readonly PeerOptions _options;
    private readonly TimeProvider _time;
    private readonly PeerCipher _cipher;
    private readonly object _sealGate = new();
    private readonly object _openGate = new();
    private readonly Channel<ReadOnlyMemory<byte>> _received;
    private readonly object _gate = new();
    private readonly Dictionary<ushort, TaskCompletionSource> _inflight = [];
    private readonly SemaphoreSlim _inflightSlots = new(MaxInflight, MaxInflight);
    private readonly HashSet<ushort> _seen = [];
    private readonly Queue<ushort> _seenOrder = new();
    private IPeerTransport? _transport;
    private ushort _nextId;
    private long _rttTicks;
    private long _bytesSent;
    private long _bytesReceived;
    private long _retransmissions;
    private long _duplicates;
    private long _refused;
    private long _rejected;
    private long _replayed;
    private long _outsideWindow;
    private long _unknownSource;
    private long _candidatesDropped;
    private long _lastSuiteNotice = long.MinValue;
    private int _disposed;

    internal PeerChannel(string peerId, PeerOptions options, TimeProvider time, PeerCipher cipher)
    {
        PeerId = peerId;
        _options = options;
        _time = time;
        _cipher = cipher;
        _received = Channel.CreateBounded<ReadOnlyMemory<byte>>(new BoundedChannelOptions(Math.Max(1, options.ReceiveQueueCapacity))
        {
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails: the message is not acknowledged and comes again.
        });
    }

    /// <summary>The peer's device id.</summary>
    public string PeerId { get; }

    /// <summary>The path messages go on now.</summary>
    public PeerPath Path => _transport?.Path ?? PeerPath.Relayed;

    /// <summary>Raised when <see cref="Path"/> changes (relay → direct, or back when a direct path dies).</summary>
    public event EventHandler<PeerPathChangedEventArgs>? PathChanged;

    /// <summary>
    /// Raised when a window of connectivity checks (the first, or the one after a direct path was dropped) ends
    /// without a direct path; from then on the checks are re-run every <see cref="PeerOptions.RecheckInterval"/>.
    /// </summary>
    public event EventHandler? ChecksEnded;

    /// <summary>Smoothed round-trip time (RFC 6298 weights) from acknowledgements and checks; null until measured.</summary>
    public TimeSpan? RoundTripTime
    {
        get
        {
            var ticks = Interlocked.Read(ref _rttTicks);
            return ticks == 0 ? null : TimeSpan.FromTicks(ticks);
        }
    }

    /// <summary>Datagram bytes sent (messages, retransmissions and acknowledgements).</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent);

    /// <summary>Datagram bytes received (messages and acknowledgements).</summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    /// <summary>The peer's address on the active path: its direct endpoint, or its relayed address.</summary>
    public IPEndPoint? RemoteEndPoint => _transport?.RemoteEndPoint;

    /// <summary>Messages sent again because no PUBACK came in time.</summary>
    public long Retransmissions => Interlocked.Read(ref _retransmissions);

    /// <summary>Messages that arrived again (same packet id) and were acknowledged but not delivered twice.</summary>
    public long DuplicatesSuppressed => Interlocked.Read(ref _duplicates);

    /// <summary>Messages left unacknowledged because the receive queue was full.</summary>
    public long RefusedWhileFull => Interlocked.Read(ref _refused);

    /// <summary>
    /// Datagrams dropped because they did not authenticate: forged or altered, sealed under another key (another
    /// session, or reflected back from our own direction), truncated, of an unknown version, or in a cipher
    /// suite this runtime lacks. Never delivered.
    /// </summary>
    public long FramesRejected => Interlocked.Read(ref _rejected);

    /// <summary>Authentic-looking datagrams dropped because their counter was already accepted: replays. Never delivered.</summary>
    public long FramesReplayed => Interlocked.Read(ref _replayed);

    /// <summary>Datagrams dropped because their counter was older than the 1,024-frame replay window. Never delivered.</summary>
    public long FramesOutsideWindow => Interlocked.Read(ref _outsideWindow);

    /// <summary>Data datagrams dropped because they came from an address no authenticated check had validated.</summary>
    public long FramesFromUnknownSource => Interlocked.Read(ref _unknownSource);

    /// <summary>
    /// Remote candidates (and peer-reflexive sources) this device refused to check: loopback (unless
    /// <see cref="PeerOptions.AllowLoopbackCandidates"/>), unspecified, multicast, broadcast, link-local, or unparsable.
    /// </summary>
    public long CandidatesDropped => Interlocked.Read(ref _candidatesDropped);

    /// <summary>Every data datagram dropped for one of the reasons above (candidates not included).</summary>
    public long FramesDropped => FramesRejected + FramesReplayed + FramesOutsideWindow + FramesFromUnknownSource;

    /// <summary>
    /// Sends one message and completes when the peer acknowledged it (PUBACK). Retransmits with DUP on an
    /// exponential timeout; throws <see cref="TimeoutException"/> after <see cref="PeerOptions.MaxSendAttempts"/> sends.
    /// </summary>
    public async Task SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (message.Length > _options.MaxMessageSize)
        {
            throw new ArgumentOutOfRangeException(nameof(message), $"At most {_options.MaxMessageSize} bytes per message (PeerOptions.MaxMessageSize).");
        }

        var transport = _transport ?? throw new InvalidOperationException("The channel has no transport.");
        await _inflightSlots.WaitAsync(cancellationToken).ConfigureAwait(false);
        ushort id;
        var acked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            do
            {
                _nextId = (ushort)(_nextId == ushort.MaxValue ? 1 : _nextId + 1);
            }
            while (_inflight.ContainsKey(_nextId));

            id = _nextId;
            _inflight[id] = acked;
        }

        try
        {
            var timeout = RoundTripTime is { } rtt ? Clamp(rtt * 2) : _options.InitialRetransmitTimeout;
            for (var attempt = 0; attempt < Math.Max(1, _options.MaxSendAttempts); attempt++)
            {
                var datagram = SealPublish(id, dup: attempt > 0, message.Span);
                var sentAt = _time.GetTimestamp();
                if (attempt > 0)
                {
                    Interlocked.Increment(ref _retransmissions);
                }

                await SendDatagramAsync(transport, datagram, cancellationToken).ConfigureAwait(false);
                try
                {
                    await acked.Task.WaitAsync(timeout, _time, cancellationToken).ConfigureAwait(false);
                    if (attempt == 0)
                    {
                        // Karn's rule (RFC 6298 §5): only an unambiguous (first-send) acknowledgement is a sample.
                        AddRttSample(_time.GetElapsedTime(sentAt));
                    }

                    return;
                }
                catch (TimeoutException)
                {
                    timeout = Clamp(timeout * 2);
                }
            }

            throw new TimeoutException($"No PUBACK from {PeerId} after {_options.MaxSendAttempts} sends.");
        }
        finally
        {
            lock (_gate)
            {
                _inflight.Remove(id);
            }

            _inflightSlots.Release();
        }
    }

    /// <summary>The next message from the peer.</summary>
    /// <exception cref="ChannelClosedException">The channel was disposed.</exception>
    public ValueTask<ReadOnlyMemory<byte>> ReceiveAsync(CancellationToken cancellationToken = default) => _received.Reader.ReadAsync(cancellationToken);

    /// <summary>Messages from the peer as they arrive, until the channel is disposed.</summary>
    public async IAsyncEnumerable<ReadOnlyMemory<byte>> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var message in _received.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return message;
        }
    }

    /// <summary>Closes the session: sockets, the TURN allocation; pending sends fail.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _received.Writer.TryComplete();
        lock (_gate)
        {
            foreach (var pending in _inflight.Values)
            {
                pending.TrySetException(new ObjectDisposedException(nameof(PeerChannel)));
            }
        }

        if (_transport is not null)
        {
            await _transport.DisposeAsync().ConfigureAwait(false);
        }

        lock (_sealGate)
        {
            lock (_openGate)
            {
                _cipher.Dispose();
            }
        }
    }

    internal void Attach(IPeerTransport transport) => _transport = transport;

    internal void OnPathChanged(PeerPath previous, PeerPath current)
    {
        try
        {
            PathChanged?.Invoke(this, new PeerPathChangedEventArgs(previous, current, RemoteEndPoint));
        }
#pragma warning disable CA1031 // An application handler must not break the session's receive loop.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    internal void OnChecksEnded()
    {
        try
        {
            ChecksEnded?.Invoke(this, EventArgs.Empty);
        }
#pragma warning disable CA1031 // An application handler must not break the session's check loop.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    internal void AddRttSample(TimeSpan sample)
    {
        if (sample <= TimeSpan.Zero)
        {
            sample = TimeSpan.FromTicks(1);
        }

        // RFC 6298 §2.3: SRTT = 7/8 SRTT + 1/8 R'.
        var old = Interlocked.Read(ref _rttTicks);
        Interlocked.Exchange(ref _rttTicks, old == 0 ? sample.Ticks : ((old * 7) + sample.Ticks) / 8);
    }

    /// <summary>A sealed frame from the peer (first byte 0x50-0x5F, RFC 7983 demultiplexing; PeerCipher has the format).</summary>
    /// <remarks>
    /// <paramref name="datagram"/> is a view of the receive buffer, valid during the call. It is opened into a
    /// pooled buffer (no allocation per datagram); the payload is copied once, into the queue. Nothing here throws:
    /// every refusal is a counted drop.
    /// </remarks>
    internal void OnDatagram(ReadOnlyMemory<byte> datagram)
    {
        Interlocked.Add(ref _bytesReceived, datagram.Length);
        if (datagram.Length < PeerCipher.Overhead || datagram.Length > _options.MaxMessageSize + 64 + PeerCipher.Overhead)
        {
            Interlocked.Increment(ref _rejected);
            return;
        }

        var plaintext = ArrayPool<byte>.Shared.Rent(datagram.Length - PeerCipher.Overhead);
        try
        {
            PeerOpenResult result;
            var length = 0;
            lock (_openGate)
            {
                result = Volatile.Read(ref _disposed) != 0 ? PeerOpenResult.NotAuthentic : _cipher.TryOpen(datagram.Span, plaintext, out length, out _);
            }

            switch (result)
            {
                case PeerOpenResult.Ok:
                    OnPacket(plaintext.AsMemory(0, length));
                    break;
                case PeerOpenResult.Replayed:
                    Interlocked.Increment(ref _replayed);
                    break;
                case PeerOpenResult.TooOld:
                    Interlocked.Increment(ref _outsideWindow);
                    break;
                case PeerOpenResult.UnsupportedSuite:
                    Interlocked.Increment(ref _rejected);
                    SendSuiteNotice();
                    break;
                default:
                    Interlocked.Increment(ref _rejected);
                    break;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(plaintext, clearArray: true);
        }
    }

    /// <summary>A data datagram from an address no authenticated check validated (PeerSession): dropped.</summary>
    internal void OnUnknownSource() => Interlocked.Increment(ref _unknownSource);

    internal void OnCandidateDropped() => Interlocked.Increment(ref _candidatesDropped);

    /// <summary>An authentic packet (a view of the opened frame, valid during the call).</summary>
    private void OnPacket(ReadOnlyMemory<byte> packet)
    {
        var sequence = new ReadOnlySequence<byte>(packet);

        // MQTT 3.1.1 §2.2: one complete packet, exactly filling the frame; anything else is dropped.
        if (MqttFrameReader.TryRead(ref sequence, _options.MaxMessageSize + 64, out var frame, out _) != OperationStatus.Done || !sequence.IsEmpty)
        {
            return;
        }

        if (frame.Type == MqttPacketType.PubAck)
        {
            if (MqttPacketReader.ReadAck(frame, MqttProtocolVersion.V311, out var ack) == MqttDecodeError.None)
            {
                lock (_gate)
                {
                    if (_inflight.TryGetValue(ack.PacketId, out var pending))
                    {
                        pending.TrySetResult();
                    }
                }
            }

            return;
        }

        // PINGREQ is the suite notice (SendSuiteNotice): opening it already switched our suite; nothing else to do.
        if (frame.Type != MqttPacketType.Publish
            || MqttPacketReader.ReadPublish(frame, MqttProtocolVersion.V311, out var publish) != MqttDecodeError.None
            || publish.QoS != 1)
        {
            return;
        }

        var id = publish.PacketId;
        bool duplicate;
        lock (_gate)
        {
            duplicate = _seen.Contains(id);
        }

        if (duplicate)
        {
            // MQTT §4.3.2: the first PUBACK was lost; acknowledge again, deliver nothing.
            Interlocked.Increment(ref _duplicates);
        }
        else if (_received.Writer.TryWrite(publish.Payload.ToArray()))
        {
            lock (_gate)
            {
                _seen.Add(id);
                _seenOrder.Enqueue(id);
                if (_seenOrder.Count > DuplicateWindow)
                {
                    _seen.Remove(_seenOrder.Dequeue());
                }
            }
        }
        else
        {
            Interlocked.Increment(ref _refused);
            return;
        }

        var transport = _transport;
        if (transport is not null)
        {
            _ = SendAckAsync(transport, id);
        }
    }

    /// <summary>
    /// The peer sealed with a suite we cannot open (it has ChaCha20-Poly1305, we do not): answer with an
    /// authentic AES-256-GCM frame (an MQTT PINGREQ), so it follows our suite (PeerCipher) before it retransmits.
    /// At most one per initial retransmission timeout, so spoofed frames cannot make us a traffic source.
    /// </summary>
    private void SendSuiteNotice()
    {
        var now = _time.GetTimestamp();
        var last = Interlocked.Read(ref _lastSuiteNotice);
        var spacing = (long)(_options.InitialRetransmitTimeout.TotalSeconds * _time.TimestampFrequency);
        if ((last != long.MinValue && now - last < spacing) || Interlocked.CompareExchange(ref _lastSuiteNotice, now, last) != last)
        {
            return;
        }

        var transport = _transport;
        if (transport is null)
        {
            return;
        }

        // MQTT 3.1.1 §3.12: PINGREQ is 0xC0 0x00.
        var datagram = new byte[PeerCipher.Overhead + 2];
        datagram[PeerCipher.HeaderLength] = 0xC0;
        if (Seal(datagram))
        {
            _ = SendQuietlyAsync(transport, datagram);
        }
    }

    private Task SendAckAsync(IPeerTransport transport, ushort id)
    {
        // MQTT 3.1.1 §3.4: PUBACK is 0x40 0x02 and the packet id.
        var datagram = new byte[PeerCipher.Overhead + 4];
        var packet = datagram.AsSpan(PeerCipher.HeaderLength);
        packet[0] = 0x40;
        packet[1] = 0x02;
        BinaryPrimitives.WriteUInt16BigEndian(packet[2..], id);
        return Seal(datagram) ? SendQuietlyAsync(transport, datagram) : Task.CompletedTask;
    }

    private async Task SendQuietlyAsync(IPeerTransport transport, ReadOnlyMemory<byte> datagram)
    {
        try
        {
            await SendDatagramAsync(transport, datagram, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A lost PUBACK is a lost datagram: the sender retransmits.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private async ValueTask SendDatagramAsync(IPeerTransport transport, ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        await transport.SendDatagramAsync(datagram, cancellationToken).ConfigureAwait(false);
        Interlocked.Add(ref _bytesSent, datagram.Length);
    }

    /// <summary>Seals the packet already written after the header; false when the channel is disposed or its counter space is used up.</summary>
    private bool Seal(byte[] datagram)
    {
        lock (_sealGate)
        {
            return Volatile.Read(ref _disposed) == 0 && _cipher.TrySeal(datagram);
        }
    }

    /// <summary>One datagram: the PUBLISH written straight into its frame (one array, as the unsealed packet was), then sealed in place.</summary>
    private ReadOnlyMemory<byte> SealPublish(ushort id, bool dup, ReadOnlySpan<byte> payload)
    {
        var length = (int)MqttPacketWriter.MeasurePublish(MqttProtocolVersion.V311, Topic, 1, false, dup, id, default, payload);
        var datagram = new byte[PeerCipher.Overhead + length];
        MqttPacketWriter.WritePublish(new FrameWriter(datagram), MqttProtocolVersion.V311, Topic, 1, false, dup, id, default, payload);
        if (!Seal(datagram))
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            throw new InvalidOperationException($"The channel to {PeerId} sealed as many frames as its key allows; connect again for fresh keys.");
        }

        return datagram;
    }

    private static TimeSpan Clamp(TimeSpan timeout) =>
        timeout < TimeSpan.FromMilliseconds(50) ? TimeSpan.FromMilliseconds(50) : timeout > MaxRetransmitTimeout ? MaxRetransmitTimeout : timeout;
}

/// <summary>A <see cref="PeerChannel"/>'s path changed.</summary>
public sealed class PeerPathChangedEventArgs(PeerPath previous, PeerPath current, IPEndPoint? remoteEndPoint) : EventArgs
{
    /// <summary>The path before.</summary>
    public PeerPath Previous { get; } = previous;

    /// <summary>The path now.</summary>
    public PeerPath Current { get; } = current;

    /// <summary>The peer's address on the new path.</summary>
    public IPEndPoint? RemoteEndPoint { get; } = remoteEndPoint;
}

/// <summary>A peer connected to this device (an accepted offer).</summary>
public sealed class PeerChannelEventArgs(PeerChannel channel) : EventArgs
{
    /// <summary>The channel to the peer; the handler owns it (dispose it to close the session).</summary>
    public PeerChannel Channel { get; } = channel;
}

/// <summary>Writes an MQTT packet into a frame, between its header and its tag (sized beforehand by MeasurePublish).</summary>
internal sealed class FrameWriter(byte[] frame) : IBufferWriter<byte>
{
    private int _position = PeerCipher.HeaderLength;

    public void Advance(int count) => _position += count;

    public Memory<byte> GetMemory(int sizeHint = 0) => frame.AsMemory(_position, frame.Length - PeerCipher.TagLength - _position);

    public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
}

using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Relay.LoadGen;

/// <summary>
/// One device of the soak, over many connections: MQTT 3.1.1 with a persistent session (clean session 0),
/// client id = user = device id, password = its generated secret. On a fresh session it subscribes at QoS 1
/// to devices/{id}/commands and devices/{id}/rendezvous/in; a resumed one must still hold them (if it does
/// not, commands go missing and the run says so). It answers every command (PUBACK, then a QoS 1 result),
/// publishes QoS 1 telemetry (an 8-byte sequence number) to devices/{id}/telemetry, answers rendezvous
/// offers and starts introductions when asked. Its unacknowledged PUBLISHes survive a lost connection and
/// are sent again, DUP set and under their packet ids, in their order, on the next [MQTT-4.4.0-1, 4.6.0-1].
/// </summary>
internal sealed class SoakDevice
{
    private const int InflightCap = 8;
    private const ushort KeepAliveSeconds = 300;

    private readonly int _index;
    private readonly int _selfCheck;
    private readonly string _secret;
    private readonly SoakLedger _ledger;
    private readonly byte[] _telemetryTopic;
    private readonly byte[] _resultsTopic;
    private readonly byte[] _rendezvousOutTopic;
    private readonly string _commandsFilter;
    private readonly string _rendezvousFilter;
    private readonly Lock _lock = new();
    private readonly List<Outgoing> _inflight = [];
    private readonly Dictionary<string, long> _pendingIntroductions = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private Socket? _socket;
    private Task _readLoop = Task.CompletedTask;
    private bool _hadSession;
    private ushort _packetId;
    private long _telemetrySeq;
    private long _lastSent;
    private volatile bool _online;

    public SoakDevice(int index, string id, string secret, SoakLedger ledger, int selfCheck)
    {
        _index = index;
        _selfCheck = selfCheck;
        Id = id;
        _secret = secret;
        _ledger = ledger;
        _telemetryTopic = Encoding.UTF8.GetBytes($"devices/{id}/telemetry");
        _resultsTopic = Encoding.UTF8.GetBytes($"devices/{id}/results");
        _rendezvousOutTopic = Encoding.UTF8.GetBytes($"devices/{id}/rendezvous/out");
        _commandsFilter = $"devices/{id}/commands";
        _rendezvousFilter = $"devices/{id}/rendezvous/in";
    }

    public string Id { get; }

    public bool Online => _online;

    /// <summary>Our PUBLISHes still waiting for their PUBACK.</summary>
    public int InFlight
    {
        get
        {
            lock (_lock)
            {
                return _inflight.Count;
            }
        }
    }

    /// <summary>
    /// The device's life until <paramref name="stop"/>: connect, stay online for an exponential time (while
    /// <paramref name="churn"/> lasts; after it, until stop), drop, stay away 1..max-offline s, again.
    /// </summary>
    public async Task RunAsync(SoakOptions o, IPEndPoint server, IPAddress source, TimeSpan firstDelay, CancellationToken churn, CancellationToken stop)
    {
        try
        {
            await Task.Delay(firstDelay, stop);
            while (!stop.IsCancellationRequested)
            {
                if (!await ConnectAsync(server, source, stop))
                {
                    Interlocked.Increment(ref _ledger.ConnectFailures);
                    await Task.Delay(TimeSpan.FromSeconds(1 + Random.Shared.NextDouble()), stop);
                    continue;
                }

                var dropped = await OnlineAsync(o, churn, stop);
                if (!dropped || stop.IsCancellationRequested)
                {
                    continue;
                }

                var away = churn.IsCancellationRequested ? Random.Shared.NextDouble() : 1 + (Random.Shared.NextDouble() * (o.MaxOfflineSeconds - 1));
                await Task.Delay(TimeSpan.FromSeconds(away), stop);
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            Close(graceful: true);
        }
    }

    /// <summary>Sends a rendezvous <c>connect</c> to <paramref name="peer"/> when online; false when it could not.</summary>
    public async Task<bool> IntroduceAsync(string peer)
    {
        var sessionId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        lock (_lock)
        {
            if (!_online || _inflight.Count >= InflightCap)
            {
                return false;
            }

            _pendingIntroductions[sessionId] = Stopwatch.GetTimestamp();
        }

        // One candidate, from TEST-NET-1 (RFC 5737): the server relays it, nothing ever probes it.
        var body = Encoding.UTF8.GetBytes(
            $"{{\"type\":\"connect\",\"sessionId\":\"{sessionId}\",\"peer\":\"{peer}\",\"candidates\":[{{\"type\":\"host\",\"address\":\"192.0.2.10\",\"port\":40000,\"priority\":2130706431}}],\"nat\":\"Unknown\"}}");
        Interlocked.Increment(ref _ledger.RendezvousAttempts);
        await PublishAsync(new Outgoing(OutgoingKind.Rendezvous, _rendezvousOutTopic, body, 0));
        return true;
    }

    /// <summary>Introductions this device started that got no answer or refusal within <paramref name="timeout"/> while it stayed connected.</summary>
    public void SweepIntroductions(TimeSpan timeout)
    {
        var limit = Stopwatch.GetTimestamp() - (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        lock (_lock)
        {
            foreach (var (sessionId, startedAt) in _pendingIntroductions)
            {
                if (startedAt < limit)
                {
                    _pendingIntroductions.Remove(sessionId);
                    Interlocked.Increment(ref _ledger.RendezvousUnanswered);
                }
            }
        }
    }

    // --- connection ----------------------------------------------------------------------------------

    private async Task<bool> ConnectAsync(IPEndPoint server, IPAddress source, CancellationToken stop)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
            timeout.CancelAfter(TimeSpan.FromSeconds(30));
            await socket.ConnectAsync(server, timeout.Token);
            await socket.SendAsync(MqttWire.Connect(Id, KeepAliveSeconds, Id, _secret, cleanSession: false), SocketFlags.None, timeout.Token);
            var connack = new byte[4];
            await socket.ReceiveExactlyAsync(connack, timeout.Token);
            // §3.2: 0x20, remaining length 2, session present (bit 0 of byte 2), return code.
            if (connack[0] != 0x20 || connack[3] != 0)
            {
                throw new InvalidDataException($"{Id}: CONNACK code {connack[3]}");
            }

            var sessionPresent = (connack[2] & 1) != 0;
            var suback = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_lock)
            {
                _socket = socket;
                _lastSent = Stopwatch.GetTimestamp();
            }

            _readLoop = Task.Run(() => ReadLoopAsync(socket, suback));
            Interlocked.Increment(ref _ledger.Connects);
            if (!sessionPresent)
            {
                // The first connect, or the server lost the session: counted, it should not after the first.
                if (_hadSession)
                {
                    Interlocked.Increment(ref _ledger.SessionsLost);
                }

                await SendAsync(socket, MqttWire.Subscribe(1, 1, _commandsFilter, _rendezvousFilter));
                var codes = await suback.Task.WaitAsync(timeout.Token);
                if (codes.Length != 2 || codes[0] != 1 || codes[1] != 1)
                {
                    throw new InvalidDataException($"{Id}: SUBACK {Convert.ToHexString(codes)}");
                }
            }

            _hadSession = true;

            // [MQTT-4.4.0-1]: the unacknowledged PUBLISHes again, DUP set, in their order; under the send
            // lock, so nothing published meanwhile overtakes them [MQTT-4.6.0-1].
            await _sendLock.WaitAsync(stop);
            try
            {
                Outgoing[] resend;
                lock (_lock)
                {
                    resend = [.. _inflight];
                    _online = true;
                }

                foreach (var message in resend)
                {
                    Interlocked.Increment(ref _ledger.Resent);
                    await SendAllAsync(socket, message.Encode(dup: true));
                }
            }
            finally
            {
                _sendLock.Release();
            }

            return true;
        }
        catch (Exception e) when (e is SocketException or IOException or InvalidDataException or OperationCanceledException or ObjectDisposedException)
        {
            lock (_lock)
            {
                if (ReferenceEquals(_socket, socket))
                {
                    _socket = null;
                }

                _online = false;
            }

            socket.Dispose();
            return false;
        }
    }

    /// <summary>Online until the drop is due (true), the server closes (true) or stop (false).</summary>
    private async Task<bool> OnlineAsync(SoakOptions o, CancellationToken churn, CancellationToken stop)
    {
        var interval = o.TelemetryIntervalSeconds * Stopwatch.Frequency;
        var now = Stopwatch.GetTimestamp();
        var dropAt = now + (long)(-Math.Log(1 - Random.Shared.NextDouble()) * o.MeanOnlineSeconds * Stopwatch.Frequency);
        var nextTelemetry = now + (long)(Random.Shared.NextDouble() * interval);
        var readLoop = _readLoop;
        while (!stop.IsCancellationRequested)
        {
            if (readLoop.IsCompleted)
            {
                Interlocked.Increment(ref _ledger.ServerClosed);
                Close(graceful: false);
                return true;
            }

            now = Stopwatch.GetTimestamp();
            var churning = !churn.IsCancellationRequested;
            if (churning && now >= dropAt)
            {
                Interlocked.Increment(ref _ledger.VoluntaryDrops);
                // Half say goodbye (DISCONNECT), half just vanish (a reset), as real devices do.
                Close(graceful: Random.Shared.Next(2) == 0);
                return true;
            }

            if (churning && now >= nextTelemetry)
            {
                await PublishTelemetryAsync();
                nextTelemetry += (long)(interval * (0.8 + (Random.Shared.NextDouble() * 0.4)));
            }
            else if (now - Volatile.Read(ref _lastSent) > KeepAliveSeconds / 3 * Stopwatch.Frequency)
            {
                // §3.1.2.10: something within the keep-alive; PINGREQ when there was nothing else.
                await SendCurrentAsync([0xC0, 0x00]);
            }

            var next = churning ? Math.Min(nextTelemetry, dropAt) : now + (10 * Stopwatch.Frequency);
            var wait = TimeSpan.FromSeconds(Math.Clamp((next - now) / (double)Stopwatch.Frequency, 0.01, 10));
            await Task.WhenAny(readLoop, Task.Delay(wait, stop));
        }

        return false;
    }

    private void Close(bool graceful)
    {
        Socket? socket;
        int abandoned;
        lock (_lock)
        {
            socket = _socket;
            _socket = null;
            _online = false;
            abandoned = _pendingIntroductions.Count;
            _pendingIntroductions.Clear();
        }

        Interlocked.Add(ref _ledger.RendezvousAbandoned, abandoned);
        if (socket is null)
        {
            return;
        }

        try
        {
            if (graceful)
            {
                // §3.14 DISCONNECT: no will, a clean end.
                socket.Send([0xE0, 0x00]);
            }
            else
            {
                socket.LingerState = new LingerOption(true, 0);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }

        socket.Dispose();
    }

    // --- sending -------------------------------------------------------------------------------------

    private async Task PublishTelemetryAsync()
    {
        lock (_lock)
        {
            if (_inflight.Count >= InflightCap)
            {
                Interlocked.Increment(ref _ledger.TelemetrySkipped);
                return;
            }
        }

        var seq = Interlocked.Increment(ref _telemetrySeq);
        var body = new byte[32];
        BinaryPrimitives.WriteInt64BigEndian(body, seq);
        Interlocked.Increment(ref _ledger.TelemetryPublished);
        await PublishAsync(new Outgoing(OutgoingKind.Telemetry, _telemetryTopic, body, seq));
    }

    /// <summary>
    /// Takes a packet id, keeps the message until its PUBACK, sends it now if online. Telemetry and
    /// introductions are held to <see cref="InflightCap"/> by their callers; results are not (a command
    /// must be answered), and at the soak's rates a device has a handful in flight, far below the
    /// server's Receive Maximum (Relay:Mqtt:MaxInflight, 32).
    /// </summary>
    private async Task PublishAsync(Outgoing message)
    {
        Socket? socket;
        lock (_lock)
        {
            do
            {
                _packetId = (ushort)(_packetId == ushort.MaxValue ? 1 : _packetId + 1);
            }
            while (_inflight.Exists(m => m.PacketId == _packetId));

            message.PacketId = _packetId;
            _inflight.Add(message);
            socket = _online ? _socket : null;
        }

        if (socket is not null)
        {
            await SendAsync(socket, message.Encode(dup: false));
        }
    }

    private async Task SendCurrentAsync(byte[] packet)
    {
        Socket? socket;
        lock (_lock)
        {
            socket = _online ? _socket : null;
        }

        if (socket is not null)
        {
            await SendAsync(socket, packet);
        }
    }

    private async Task SendAsync(Socket socket, byte[] packet)
    {
        await _sendLock.WaitAsync();
        try
        {
            await SendAllAsync(socket, packet);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // The read loop sees the end too; the message stays in flight for the next connection.
        }
        finally
        {
            _sendLock.Release();
        }
    }

    private async Task SendAllAsync(Socket socket, byte[] packet)
    {
        var offset = 0;
        while (offset < packet.Length)
        {
            offset += await socket.SendAsync(packet.AsMemory(offset), SocketFlags.None);
        }

        Volatile.Write(ref _lastSent, Stopwatch.GetTimestamp());
    }

    // --- receiving -----------------------------------------------------------------------------------

    private async Task ReadLoopAsync(Socket socket, TaskCompletionSource<byte[]> suback)
    {
        var buffer = new byte[4096];
        var filled = 0;
        try
        {
            while (true)
            {
                if (filled == buffer.Length)
                {
                    Array.Resize(ref buffer, buffer.Length * 2);
                }

                var n = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None);
                if (n == 0)
                {
                    return;
                }

                filled += n;
                var consumed = 0;
                var malformed = false;
                while (MqttWire.TryReadPacket(buffer.AsSpan(consumed, filled - consumed), out var type, out var header, out var remaining, out malformed))
                {
                    var body = buffer.AsMemory(consumed + header, remaining);
                    consumed += header + remaining;
                    switch (type >> 4)
                    {
                        case 3:
                            await OnPublishAsync(socket, body, (type >> 1) & 3);
                            break;
                        case 4 when remaining >= 2:
                            OnPuback(BinaryPrimitives.ReadUInt16BigEndian(body.Span));
                            break;
                        case 9 when remaining >= 3:
                            suback.TrySetResult(body.Span[2..].ToArray());
                            break;
                        default:
                            break;
                    }
                }

                if (malformed)
                {
                    return;
                }

                buffer.AsSpan(consumed, filled - consumed).CopyTo(buffer);
                filled -= consumed;
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        finally
        {
            suback.TrySetResult([]);
        }
    }

    private void OnPuback(ushort packetId)
    {
        Outgoing? done = null;
        lock (_lock)
        {
            var i = _inflight.FindIndex(m => m.PacketId == packetId);
            if (i >= 0)
            {
                done = _inflight[i];
                _inflight.RemoveAt(i);
            }
        }

        if (done?.Kind == OutgoingKind.Telemetry)
        {
            _ledger.TelemetryAcked(_index, done.Seq);
        }
        else if (done?.Kind == OutgoingKind.Result)
        {
            Interlocked.Increment(ref _ledger.CommandResultsAcked);
        }
    }

    private async Task OnPublishAsync(Socket socket, ReadOnlyMemory<byte> packet, int qos)
    {
        var span = packet.Span;
        var topicLength = BinaryPrimitives.ReadUInt16BigEndian(span);
        var topic = Encoding.UTF8.GetString(span.Slice(2, topicLength));
        var offset = 2 + topicLength;
        if (qos > 0)
        {
            // §3.4: PUBACK with the PUBLISH's packet id; for a command it marks it delivered.
            await SendAsync(socket, [0x40, 0x02, span[offset], span[offset + 1]]);
            offset += 2;
        }

        var payload = packet[offset..];
        if (topic == _commandsFilter)
        {
            var commandId = PushDevice.ReadId(payload.Span);
            if (_selfCheck > 0 && Interlocked.Increment(ref _ledger.SelfCheckCommands) % _selfCheck == 0)
            {
                return;
            }

            if (commandId is not null)
            {
                _ledger.CommandSeenByDevice(commandId);
                var result = Encoding.UTF8.GetBytes($"{{\"id\":\"{commandId}\",\"status\":\"succeeded\",\"payload\":{{\"soak\":true}}}}");
                await PublishAsync(new Outgoing(OutgoingKind.Result, _resultsTopic, result, 0));
            }
        }
        else if (topic == _rendezvousFilter)
        {
            await OnRendezvousAsync(payload);
        }
    }

    /// <summary>docs/rendezvous.md: an offer is answered at once; an answer or error closes our introduction.</summary>
    private async Task OnRendezvousAsync(ReadOnlyMemory<byte> json)
    {
        var (type, sessionId, _) = ReadRendezvous(json.Span);
        switch (type)
        {
            case "offer" when sessionId is not null:
                Interlocked.Increment(ref _ledger.RendezvousOffers);
                var answer = Encoding.UTF8.GetBytes($"{{\"type\":\"answer\",\"sessionId\":\"{sessionId}\",\"candidates\":[],\"nat\":\"Unknown\"}}");
                await PublishAsync(new Outgoing(OutgoingKind.Rendezvous, _rendezvousOutTopic, answer, 0));
                break;
            case "answer" when sessionId is not null && Forget(sessionId):
                Interlocked.Increment(ref _ledger.RendezvousAnswered);
                break;
            case "error" when sessionId is not null && Forget(sessionId):
                Interlocked.Increment(ref _ledger.RendezvousRefused);
                break;
            case "start":
                Interlocked.Increment(ref _ledger.RendezvousStarts);
                break;
            default:
                // An error about an offer we answered after its requester left, a late reply: counted only.
                Interlocked.Increment(ref _ledger.RendezvousOther);
                break;
        }
    }

    private bool Forget(string sessionId)
    {
        lock (_lock)
        {
            return _pendingIntroductions.Remove(sessionId);
        }
    }

    private static (string? Type, string? SessionId, string? Code) ReadRendezvous(ReadOnlySpan<byte> json)
    {
        string? type = null, sessionId = null, code = null;
        try
        {
            var reader = new Utf8JsonReader(json);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return default;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = reader.ValueTextEquals("type"u8) ? 1 : reader.ValueTextEquals("sessionId"u8) ? 2 : reader.ValueTextEquals("code"u8) ? 3 : 0;
                if (!reader.Read())
                {
                    break;
                }

                if (name == 0 || reader.TokenType != JsonTokenType.String)
                {
                    reader.Skip();
                    continue;
                }

                switch (name)
                {
                    case 1:
                        type = reader.GetString();
                        break;
                    case 2:
                        sessionId = reader.GetString();
                        break;
                    default:
                        code = reader.GetString();
                        break;
                }
            }
        }
        catch (JsonException)
        {
        }

        return (type, sessionId, code);
    }

    private enum OutgoingKind
    {
        Telemetry,
        Result,
        Rendezvous,
    }

    /// <summary>A QoS 1 PUBLISH of ours until its PUBACK.</summary>
    private sealed class Outgoing(OutgoingKind kind, byte[] topic, byte[] body, long seq)
    {
        public OutgoingKind Kind { get; } = kind;

        public long Seq { get; } = seq;

        public ushort PacketId { get; set; }

        public byte[] Encode(bool dup)
        {
            var packet = new byte[10 + topic.Length + body.Length];
            var n = MqttWire.WritePublishHeader(packet, topic, 1, PacketId, body.Length);
            if (dup)
            {
                // §3.3.1.1: DUP on a re-delivery.
                packet[0] |= 0x08;
            }

            body.CopyTo(packet, n);
            return packet[..(n + body.Length)];
        }
    }
}

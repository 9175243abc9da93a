using System.Buffers.Binary;
using System.Text;

namespace Relay.DeviceClient.Internal;

/// <summary>A message waiting to be sent (or in flight). Owns its bytes.</summary>
internal sealed class OutgoingMessage(byte[] topic, byte[] payload, byte qos, bool retain, byte[]? correlationData, string? contentType)
{
    public byte[] Topic { get; } = topic;

    public byte[] Payload { get; } = payload;

    public byte QoS { get; } = qos;

    public bool Retain { get; } = retain;

    public byte[]? CorrelationData { get; } = correlationData;

    public string? ContentType { get; } = contentType;

    /// <summary>The journal sequence number while the message is in the journal; 0 when it is not.</summary>
    public long Sequence { get; set; }

    /// <summary>Worthless later (rendezvous signalling): never queued offline nor journaled at stop.</summary>
    public bool Transient { get; init; }
}

/// <summary>
/// The bounded offline queue, optionally backed by an append-only journal so queued messages survive a
/// restart. Journal records are [u32 length][u8 type][i64 seq][body][u32 FNV-1a of type..body]; each one
/// is written to the OS before the call returns, so a kill -9 loses at most a record being written, which
/// the checksum detects and the loader cuts off. A message stays in the journal until its PUBACK (at least
/// once); the file is rewritten (compacted) when dead records outweigh live ones, which bounds it to about
/// twice the live data.
/// </summary>
internal sealed class OfflineQueue : IDisposable
{
    private const byte AddRecord = 1;
    private const byte RemoveRecord = 2;
    private const int MaxRecordLength = 16 * 1024 * 1024;

    private readonly object _gate = new();
    private readonly LinkedList<OutgoingMessage> _queue = new();
    private readonly Dictionary<long, OutgoingMessage> _journaled = [];
    private readonly int _capacity;
    private readonly OfflineQueueDropPolicy _policy;
    private readonly string? _path;
    private FileStream? _file;
    private long _nextSequence = 1;
    private long _deadRecords;

    public OfflineQueue(OfflineQueueOptions options)
    {
        _capacity = Math.Max(1, options.Capacity);
        _policy = options.DropPolicy;
        _path = options.FilePath;
    }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>Signaled (count 1 at most) when a message is added.</summary>
    public SemaphoreSlim Available { get; } = new(0, 1);

    /// <summary>Loads the journal (once, before use). Returns how many messages it held.</summary>
    public int Load()
    {
        if (_path is null)
        {
            return 0;
        }

        lock (_gate)
        {
            var directory = Path.GetDirectoryName(Path.GetFullPath(_path));
            if (directory is not null)
            {
                Directory.CreateDirectory(directory);
            }

            var live = new SortedDictionary<long, OutgoingMessage>();
            if (File.Exists(_path))
            {
                var bytes = File.ReadAllBytes(_path);
                var offset = 0;
                while (TryReadRecord(bytes.AsSpan(offset), out var length, out var type, out var sequence, out var message))
                {
                    offset += length;
                    if (type == AddRecord && message is not null)
                    {
                        message.Sequence = sequence;
                        live[sequence] = message;
                    }
                    else if (type == RemoveRecord)
                    {
                        live.Remove(sequence);
                    }

                    _nextSequence = Math.Max(_nextSequence, sequence + 1);
                }
            }

            foreach (var message in live.Values.Skip(Math.Max(0, live.Count - _capacity)))
            {
                _queue.AddLast(message);
                _journaled[message.Sequence] = message;
            }

            RewriteLocked();
            Signal();
            return _queue.Count;
        }
    }

    /// <summary>Adds a message; returns the message dropped to make room (or the new one under DropNewest), if any.</summary>
    public OutgoingMessage? Enqueue(OutgoingMessage message)
    {
        OutgoingMessage? dropped = null;
        lock (_gate)
        {
            if (_queue.Count >= _capacity)
            {
                if (_policy == OfflineQueueDropPolicy.DropNewest)
                {
                    return message;
                }

                dropped = _queue.First!.Value;
                _queue.RemoveFirst();
                ForgetLocked(dropped);
            }

            if (_path is not null)
            {
                message.Sequence = _nextSequence++;
                _journaled[message.Sequence] = message;
                AppendLocked(AddRecord, message.Sequence, message);
            }

            _queue.AddLast(message);
        }

        Signal();
        return dropped;
    }

    public bool TryPeek(out OutgoingMessage? message)
    {
        lock (_gate)
        {
            message = _queue.First?.Value;
            return message is not null;
        }
    }

    /// <summary>Takes the head; it stays in the journal until <see cref="Complete"/>.</summary>
    public OutgoingMessage? TryDequeue()
    {
        lock (_gate)
        {
            var head = _queue.First?.Value;
            if (head is not null)
            {
                _queue.RemoveFirst();
            }

            return head;
        }
    }

    /// <summary>The message was acknowledged (or sent at QoS 0): remove it from the journal.</summary>
    public void Complete(OutgoingMessage message)
    {
        lock (_gate)
        {
            ForgetLocked(message);
        }
    }

    /// <summary>Puts an unacknowledged message into the journal (at stop) so it is sent after a restart.</summary>
    public void Persist(OutgoingMessage message)
    {
        if (_path is null || message.Sequence != 0 || message.Transient)
        {
            return;
        }

        lock (_gate)
        {
            message.Sequence = _nextSequence++;
            _journaled[message.Sequence] = message;
            AppendLocked(AddRecord, message.Sequence, message);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_file is not null)
            {
                _file.Flush(flushToDisk: true);
                _file.Dispose();
                _file = null;
            }
        }
    }

    private void Signal()
    {
        try
        {
            if (Available.CurrentCount == 0)
            {
                Available.Release();
            }
        }
        catch (SemaphoreFullException)
        {
            // Already signaled.
        }
    }

    private void ForgetLocked(OutgoingMessage message)
    {
        if (message.Sequence == 0 || !_journaled.Remove(message.Sequence))
        {
            return;
        }

        AppendLocked(RemoveRecord, message.Sequence, null);
        message.Sequence = 0;
        _deadRecords += 2;
        if (_deadRecords > Math.Max(64, _journaled.Count * 2))
        {
            RewriteLocked();
        }
    }

    private void AppendLocked(byte type, long sequence, OutgoingMessage? message)
    {
        if (_file is null)
        {
            return;
        }

        var record = Encode(type, sequence, message);
        _file.Write(record);

        // To the OS now (survives kill -9); fsync is left to Dispose and compaction.
        _file.Flush(flushToDisk: false);
    }

    /// <summary>Compaction: the live records into a temporary file, then an atomic rename over the journal.</summary>
    private void RewriteLocked()
    {
        if (_path is null)
        {
            return;
        }

        _file?.Dispose();
        var temporary = _path + ".tmp";
        using (var output = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            foreach (var message in _journaled.Values.OrderBy(static m => m.Sequence))
            {
                output.Write(Encode(AddRecord, message.Sequence, message));
            }

            output.Flush(flushToDisk: true);
        }

        File.Move(temporary, _path, overwrite: true);
        _file = new FileStream(_path, FileMode.Append, FileAccess.Write, FileShare.Read);
        _deadRecords = 0;
    }

    private static byte[] Encode(byte type, long sequence, OutgoingMessage? message)
    {
        var contentType = message?.ContentType is { } ct ? Encoding.UTF8.GetBytes(ct) : null;
        var bodyLength = message is null
            ? 0
            : 2 + 2 + message.Topic.Length + 4 + (message.CorrelationData?.Length ?? 0) + 2 + (contentType?.Length ?? 0) + 4 + message.Payload.Length;
        var length = 4 + 1 + 8 + bodyLength + 4;
        var record = new byte[length];
        var span = record.AsSpan();
        BinaryPrimitives.WriteInt32LittleEndian(span, length);
        span[4] = type;
        BinaryPrimitives.WriteInt64LittleEndian(span[5..], sequence);
        var p = 13;
        if (message is not null)
        {
            span[p++] = message.QoS;
            span[p++] = message.Retain ? (byte)1 : (byte)0;
            BinaryPrimitives.WriteUInt16LittleEndian(span[p..], (ushort)message.Topic.Length);
            p += 2;
            message.Topic.CopyTo(span[p..]);
            p += message.Topic.Length;
            BinaryPrimitives.WriteInt32LittleEndian(span[p..], message.CorrelationData?.Length ?? -1);
            p += 4;
            message.CorrelationData?.CopyTo(span[p..]);
            p += message.CorrelationData?.Length ?? 0;
            BinaryPrimitives.WriteInt16LittleEndian(span[p..], (short)(contentType?.Length ?? -1));
            p += 2;
            contentType?.CopyTo(span[p..]);
            p += contentType?.Length ?? 0;
            BinaryPrimitives.WriteInt32LittleEndian(span[p..], message.Payload.Length);
            p += 4;
            message.Payload.CopyTo(span[p..]);
            p += message.Payload.Length;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(span[p..], Fnv1a(span[4..p]));
        return record;
    }

    /// <summary>Decodes one record; false at the end or at a torn or corrupt record (everything after it is dropped).</summary>
    private static bool TryReadRecord(ReadOnlySpan<byte> span, out int length, out byte type, out long sequence, out OutgoingMessage? message)
    {
        length = 0;
        type = 0;
        sequence = 0;
        message = null;
        if (span.Length < 17)
        {
            return false;
        }

        length = BinaryPrimitives.ReadInt32LittleEndian(span);
        if (length < 17 || length > MaxRecordLength || length > span.Length)
        {
            return false;
        }

        var record = span[..length];
        if (BinaryPrimitives.ReadUInt32LittleEndian(record[(length - 4)..]) != Fnv1a(record[4..(length - 4)]))
        {
            return false;
        }

        type = record[4];
        sequence = BinaryPrimitives.ReadInt64LittleEndian(record[5..]);
        if (type != AddRecord)
        {
            return type == RemoveRecord;
        }

        var body = record[13..(length - 4)];
        try
        {
            var qos = body[0];
            var retain = body[1] != 0;
            var p = 2;
            int topicLength = BinaryPrimitives.ReadUInt16LittleEndian(body[p..]);
            p += 2;
            var topic = body.Slice(p, topicLength).ToArray();
            p += topicLength;
            var correlationLength = BinaryPrimitives.ReadInt32LittleEndian(body[p..]);
            p += 4;
            byte[]? correlation = null;
            if (correlationLength >= 0)
            {
                correlation = body.Slice(p, correlationLength).ToArray();
                p += correlationLength;
            }

            var contentTypeLength = BinaryPrimitives.ReadInt16LittleEndian(body[p..]);
            p += 2;
            string? contentType = null;
            if (contentTypeLength >= 0)
            {
                contentType = Encoding.UTF8.GetString(body.Slice(p, contentTypeLength));
                p += contentTypeLength;
            }

            var payloadLength = BinaryPrimitives.ReadInt32LittleEndian(body[p..]);
            p += 4;
            var payload = body.Slice(p, payloadLength).ToArray();
            message = new OutgoingMessage(topic, payload, qos, retain, correlation, contentType);
            return true;
        }
        catch (ArgumentOutOfRangeException)
        {
            return false;
        }
    }

    private static uint Fnv1a(ReadOnlySpan<byte> data)
    {
        var hash = 2166136261u;
        foreach (var b in data)
        {
            hash = (hash ^ b) * 16777619u;
        }

        return hash;
    }
}

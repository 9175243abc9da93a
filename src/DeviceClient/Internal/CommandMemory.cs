using System.Buffers.Binary;
using System.Text;

namespace Relay.DeviceClient.Internal;

/// <summary>A command this client has seen: running, or answered with <see cref="ResultBody"/>.</summary>
internal sealed class CommandEntry(string id)
{
    public string Id { get; } = id;

    public bool Answered { get; set; }

    public int Deliveries { get; set; }

    public byte[] ResultTopic { get; set; } = [];

    public byte[]? ResultBody { get; set; }

    public byte[]? CorrelationData { get; set; }

    /// <summary>PUBACKs owed for deliveries of this command, sent once it is answered.</summary>
    public List<(MqttConnection Connection, ushort PacketId)> PendingAcks { get; } = [];
}

/// <summary>
/// The last N answered command ids with their results (docs/push.md "Duplicates"), plus the running ones.
/// With a state file, answered entries survive a restart: the file is rewritten whole (it is bounded by N)
/// into a temporary file and renamed over the old one, so a crash leaves the old or the new, never half.
/// </summary>
internal sealed class CommandMemory(int capacity, string? path)
{
    private readonly Dictionary<string, CommandEntry> _entries = new(StringComparer.Ordinal);
    private readonly Queue<string> _answeredOrder = new();

    public object Gate { get; } = new();

    public CommandEntry? Find(string id) => _entries.GetValueOrDefault(id);

    public CommandEntry AddRunning(string id)
    {
        var entry = new CommandEntry(id);
        _entries[id] = entry;
        return entry;
    }

    public void Forget(CommandEntry entry)
    {
        if (!entry.Answered)
        {
            _entries.Remove(entry.Id);
        }
    }

    /// <summary>Caller holds <see cref="Gate"/>.</summary>
    public void MarkAnswered(CommandEntry entry)
    {
        entry.Answered = true;
        _answeredOrder.Enqueue(entry.Id);
        while (_answeredOrder.Count > Math.Max(1, capacity))
        {
            var old = _answeredOrder.Dequeue();
            if (_entries.TryGetValue(old, out var e) && e.Answered)
            {
                _entries.Remove(old);
            }
        }

        SaveLocked();
    }

    public void Load()
    {
        if (path is null || !File.Exists(path))
        {
            return;
        }

        try
        {
            var bytes = File.ReadAllBytes(path).AsSpan();
            var count = BinaryPrimitives.ReadInt32LittleEndian(bytes);
            var p = 4;
            for (var i = 0; i < count; i++)
            {
                var id = Encoding.UTF8.GetString(Field(bytes, ref p));
                var topic = Field(bytes, ref p).ToArray();
                var body = Field(bytes, ref p).ToArray();
                var hasCorrelation = bytes[p++] != 0;
                var correlation = hasCorrelation ? Field(bytes, ref p).ToArray() : null;
                var entry = new CommandEntry(id) { Answered = true, ResultTopic = topic, ResultBody = body, CorrelationData = correlation, Deliveries = 1 };
                _entries[id] = entry;
                _answeredOrder.Enqueue(id);
            }
        }
        catch (ArgumentOutOfRangeException)
        {
            // A file not written by us (the rename makes ours whole): start with what was read.
        }
    }

    private static ReadOnlySpan<byte> Field(ReadOnlySpan<byte> bytes, ref int p)
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(bytes[p..]);
        p += 4;
        var field = bytes.Slice(p, length);
        p += length;
        return field;
    }

    private void SaveLocked()
    {
        if (path is null)
        {
            return;
        }

        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }

        var temporary = path + ".tmp";
        using (var output = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            Span<byte> number = stackalloc byte[4];
            var answered = _answeredOrder.Where(id => _entries.ContainsKey(id)).ToList();
            BinaryPrimitives.WriteInt32LittleEndian(number, answered.Count);
            output.Write(number);
            foreach (var id in answered)
            {
                var entry = _entries[id];
                WriteField(output, Encoding.UTF8.GetBytes(id));
                WriteField(output, entry.ResultTopic);
                WriteField(output, entry.ResultBody ?? []);
                output.WriteByte(entry.CorrelationData is null ? (byte)0 : (byte)1);
                if (entry.CorrelationData is not null)
                {
                    WriteField(output, entry.CorrelationData);
                }
            }

            output.Flush(flushToDisk: true);
        }

        File.Move(temporary, path, overwrite: true);
    }

    private static void WriteField(Stream output, ReadOnlySpan<byte> field)
    {
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(length, field.Length);
        output.Write(length);
        output.Write(field);
    }
}

using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using Relay.Server.Hosting;

namespace Relay.Server.Connectors;

/// <summary>
/// A connector's file-backed FIFO for messages its target could not take: segment files <c>{seq}.seg</c> of
/// <see cref="ConnectorSpillRecord"/>s in a directory of its own (0700, files 0600), read from the oldest, a
/// segment deleted once read through. <c>cursor</c> holds the read position (written by rename, so it is either
/// the old or the new one), so a restart, or a crash (kill -9: written records are in the page cache), resumes
/// where delivery stopped; records read but not yet committed when the process died are delivered again.
/// A torn last record (the crash hit mid-write) is found at open, cut off and counted.
/// Bounded by <c>maxBytes</c> of unread records. Single-threaded: the connector's loop owns it.
/// </summary>
internal sealed class ConnectorSpillQueue : IDisposable
{
    private const string SegmentSuffix = ".seg";
    private const string CursorFile = "cursor";

    private readonly string _directory;
    private readonly long _maxBytes;
    private readonly long _segmentBytes;
    private readonly LinkedList<Segment> _segments = new();
    private readonly ArrayBufferWriter<byte> _scratch = new(4096);
    private FileStream? _writer;
    private long _readOffset;
    private long _nextSeq = 1;
    private long _peekEnd = -1;
    private int _peekCount;
    private long _peekBytes;

    /// <summary>Opens (or creates) the queue in <paramref name="directory"/>; <see cref="Discarded"/> says how many damaged bytes were cut off.</summary>
    public ConnectorSpillQueue(string directory, long maxBytes)
    {
        _directory = directory;
        _maxBytes = maxBytes;

        // Small enough that a read-through segment frees its disk soon, large enough that a big payload fits.
        _segmentBytes = Math.Clamp(maxBytes / 8, 64 * 1024, 8 * 1024 * 1024);
        PrivateFiles.CreateDirectory(directory);
        Open();
    }

    /// <summary>Unread records.</summary>
    public long Count { get; private set; }

    /// <summary>Bytes of unread records (the bound applies to these).</summary>
    public long Bytes { get; private set; }

    /// <summary>Bytes found damaged at open (a torn last record after a crash) and cut off.</summary>
    public long Discarded { get; private set; }

    /// <summary>Records found damaged at open or while reading, and skipped (their count, where it could be told).</summary>
    public long DiscardedRecords { get; private set; }

    /// <summary>
    /// Appends <paramref name="messages"/> from <paramref name="start"/> in order until one would pass the byte
    /// bound; returns how many were appended (the caller drops and counts the rest). Throws <see cref="IOException"/>
    /// when the disk refuses (the caller drops and counts those).
    /// </summary>
    public int Append(IReadOnlyList<ConnectorMessage> messages, int start = 0)
    {
        var appended = 0;
        try
        {
            for (var i = start; i < messages.Count; i++)
            {
                var length = ConnectorSpillRecord.Length(messages[i]);
                if (Bytes + length > _maxBytes)
                {
                    break;
                }

                var tail = Tail();
                _scratch.ResetWrittenCount();
                ConnectorSpillRecord.Write(_scratch, messages[i]);
                _writer!.Write(_scratch.WrittenSpan);
                tail.Length += length;
                Bytes += length;
                Count++;
                appended++;
            }
        }
        finally
        {
            // To the kernel: a process crash after this loses nothing that was appended.
            _writer?.Flush();
        }

        return appended;
    }

    /// <summary>
    /// Up to <paramref name="maxCount"/> records (and about <paramref name="maxBytes"/>, at least one) from the
    /// oldest, without removing them; <see cref="Commit"/> removes what the last peek returned.
    /// </summary>
    public List<ConnectorMessage> Peek(int maxCount, long maxBytes)
    {
        var batch = new List<ConnectorMessage>();
        _peekCount = 0;
        _peekBytes = 0;
        Span<byte> header = stackalloc byte[ConnectorSpillRecord.HeaderLength];
        while (_segments.First is { } first)
        {
            var head = first.Value;
            if (_readOffset >= head.Length)
            {
                if (head == _segments.Last!.Value)
                {
                    break;
                }

                // Read through (or its rest damaged): on to the next segment.
                DropHead();
                continue;
            }

            var readOptions = new FileStreamOptions { Mode = FileMode.Open, Access = FileAccess.Read, Share = FileShare.ReadWrite | FileShare.Delete };
            using var reader = new FileStream(head.Path, readOptions);
            reader.Position = _readOffset;
            var offset = _readOffset;
            while (batch.Count < maxCount && offset < head.Length && (batch.Count == 0 || _peekBytes < maxBytes))
            {
                var message = ReadRecord(reader, head.Length - offset, header, out var consumed);
                if (message is null)
                {
                    SkipRestOfHead(head, offset);
                    break;
                }

                batch.Add(message);
                offset += consumed;
                _peekBytes += consumed;
                _peekCount++;
            }

            _peekEnd = offset;
            if (batch.Count > 0)
            {
                break;
            }
        }

        if (batch.Count == 0)
        {
            // Nothing readable is left (the counts can only be estimated past a damaged record).
            Count = 0;
            Bytes = 0;
        }

        return batch;
    }

    /// <summary>Removes the records the last <see cref="Peek"/> returned.</summary>
    public void Commit()
    {
        if (_peekEnd < 0 || _segments.First is null)
        {
            return;
        }

        _readOffset = _peekEnd;
        Count -= _peekCount;
        Bytes -= _peekBytes;
        _peekEnd = -1;
        _peekCount = 0;
        _peekBytes = 0;
        var head = _segments.First.Value;
        if (_readOffset >= head.Length)
        {
            DropHead();
        }

        WriteCursor();
    }

    public void Dispose()
    {
        _writer?.Dispose();
        _writer = null;
    }

    // The record at the stream's position, within the remaining bytes known to be written; null
    // when none can be read there (torn, damaged). The declared length is checked against what is left in the
    // file before the body is allocated, so a damaged length cannot ask for more memory than the file holds.
    private static ConnectorMessage? ReadRecord(FileStream stream, long remaining, Span<byte> header, out int consumed)
    {
        consumed = 0;
        var maxBody = (int)Math.Min(int.MaxValue - 16, remaining - ConnectorSpillRecord.HeaderLength);
        if (remaining < ConnectorSpillRecord.HeaderLength || !ReadExactly(stream, header)
            || ConnectorSpillRecord.TryReadHeader(header, maxBody, out var bodyLength) != OperationStatus.Done)
        {
            return null;
        }

        var record = new byte[ConnectorSpillRecord.HeaderLength + bodyLength];
        header.CopyTo(record);
        return ReadExactly(stream, record.AsSpan(ConnectorSpillRecord.HeaderLength))
            && ConnectorSpillRecord.TryRead(record, bodyLength, out var message, out consumed) == OperationStatus.Done
            ? message
            : null;
    }

    private static bool ReadExactly(FileStream stream, Span<byte> buffer)
    {
        try
        {
            stream.ReadExactly(buffer);
            return true;
        }
        catch (EndOfStreamException)
        {
            return false;
        }
    }

    // A record that cannot be read where one should be: the rest of the segment cannot be framed, so it is
    // given up (counted); records before it were delivered, those after it in later segments still will be.
    private void SkipRestOfHead(Segment head, long offset)
    {
        var lost = head.Length - offset;
        Discarded += lost;
        DiscardedRecords++;
        Bytes = Math.Max(0, Bytes - lost);
        Count = Math.Max(0, Count - 1);
        head.Length = offset;
        if (head == _segments.Last!.Value)
        {
            // Appends must not continue behind a cut: the next one starts a new segment.
            _writer?.Dispose();
            _writer = null;
        }
    }

    private Segment Tail()
    {
        if (_writer is not null && _segments.Last is { } last && last.Value.Length < _segmentBytes)
        {
            return last.Value;
        }

        _writer?.Dispose();
        // Never reused: the cursor may still name a deleted segment, and anything below it is deleted at open.
        var seq = _nextSeq++;
        var path = Path.Combine(_directory, seq.ToString("D12", CultureInfo.InvariantCulture) + SegmentSuffix);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.ReadWrite | FileShare.Delete };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = PrivateFiles.FileMode;
        }

        _writer = new FileStream(path, options);
        var segment = new Segment(seq, path) { Length = 0 };
        if (_segments.Count == 0)
        {
            _readOffset = 0;
        }

        _segments.AddLast(segment);
        return segment;
    }

    private void DropHead()
    {
        var head = _segments.First!.Value;
        if (head == _segments.Last!.Value)
        {
            // The writer's own segment, read through: close it so the next append starts a fresh one.
            _writer?.Dispose();
            _writer = null;
        }

        _segments.RemoveFirst();
        File.Delete(head.Path);
        _readOffset = 0;
    }

    private void WriteCursor()
    {
        Span<byte> cursor = stackalloc byte[16];
        BinaryPrimitives.WriteInt64BigEndian(cursor, _segments.First?.Value.Seq ?? 0);
        BinaryPrimitives.WriteInt64BigEndian(cursor[8..], _readOffset);
        var temporary = Path.Combine(_directory, CursorFile + ".tmp");
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = PrivateFiles.FileMode;
        }

        using (var stream = new FileStream(temporary, options))
        {
            stream.Write(cursor);
        }

        File.Move(temporary, Path.Combine(_directory, CursorFile), overwrite: true);
    }

    // Finds the segments, skips what the cursor says was delivered, and measures (and validates) the rest.
    private void Open()
    {
        long cursorSeq = 0, cursorOffset = 0;
        var cursorPath = Path.Combine(_directory, CursorFile);
        if (File.Exists(cursorPath))
        {
            var bytes = File.ReadAllBytes(cursorPath);
            if (bytes.Length == 16)
            {
                cursorSeq = BinaryPrimitives.ReadInt64BigEndian(bytes);
                cursorOffset = BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(8));
            }
        }

        var found = Directory.EnumerateFiles(_directory, "*" + SegmentSuffix)
            .Select(static path => (Path: path, Seq: SegmentSeq(path)))
            .Where(static s => s.Seq > 0)
            .OrderBy(static s => s.Seq)
            .ToList();
        _nextSeq = Math.Max(cursorSeq, found.Count > 0 ? found[^1].Seq : 0) + 1;
        foreach (var (path, seq) in found)
        {
            if (seq < cursorSeq)
            {
                File.Delete(path);
                continue;
            }

            var start = seq == cursorSeq ? cursorOffset : 0;
            var segment = new Segment(seq, path);
            var (validEnd, records) = Scan(path, start);
            segment.Length = validEnd;
            if (validEnd <= start)
            {
                File.Delete(path);
                continue;
            }

            if (_segments.Count == 0)
            {
                _readOffset = start;
            }

            _segments.AddLast(segment);
            Count += records;
            Bytes += validEnd - start;
        }

        // Appends go to a new segment: never after a tail that a crash may have torn.
    }

    private static long SegmentSeq(string path) =>
        long.TryParse(Path.GetFileNameWithoutExtension(path), NumberStyles.None, CultureInfo.InvariantCulture, out var seq) ? seq : -1;

    private (long ValidEnd, long Records) Scan(string path, long start)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var length = stream.Length;
        if (start > length)
        {
            return (start, 0);
        }

        stream.Position = start;
        var offset = start;
        long records = 0;
        Span<byte> header = stackalloc byte[ConnectorSpillRecord.HeaderLength];
        while (offset < length)
        {
            if (ReadRecord(stream, length - offset, header, out var consumed) is null)
            {
                break;
            }

            offset += consumed;
            records++;
        }

        if (offset < length)
        {
            Discarded += length - offset;
            DiscardedRecords++;
        }

        return (offset, records);
    }

    private sealed class Segment(long seq, string path)
    {
        public long Seq { get; } = seq;

        public string Path { get; } = path;

        /// <summary>Where its valid records end (appends move it).</summary>
        public long Length { get; set; }
    }
}

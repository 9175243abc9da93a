using System.Globalization;
using System.Text;
using Relay.Server.Connectors;

namespace Relay.Unit.Tests.Connectors;

/// <summary>The file-backed spill queue: order across segments, the byte bound, resuming after a restart, and a torn tail.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ConnectorSpillQueueTests : IDisposable
{
    private readonly string _directory = Path.Combine(Directory.CreateTempSubdirectory("relay-spill-").FullName, "c");

    public void Dispose() => Directory.Delete(Path.GetDirectoryName(_directory)!, recursive: true);

    [Fact]
    public void MessagesComeOutInOrder_AcrossSegments_AndReadSegmentsAreDeleted()
    {
        var messages = Messages(0, 3000, payloadBytes: 100);
        using var queue = new ConnectorSpillQueue(_directory, 512 * 1024); // 64 KiB segments
        for (var i = 0; i < messages.Count; i += 250)
        {
            Assert.Equal(250, queue.Append(messages.GetRange(i, 250)));
        }

        Assert.Equal(3000, queue.Count);
        Assert.True(Directory.GetFiles(_directory, "*.seg").Length > 1, "the test should span several segments");
        var read = DrainAll(queue, 37);
        Assert.Equal(Payloads(messages), Payloads(read));
        Assert.Equal(0, queue.Count);
        Assert.Equal(0, queue.Bytes);
        Assert.True(Directory.GetFiles(_directory, "*.seg").Length <= 1);
    }

    [Fact]
    public void Append_StopsAtTheByteBound()
    {
        var messages = Messages(0, 100, payloadBytes: 200);
        var one = ConnectorSpillRecord.Length(messages[0]);
        using var queue = new ConnectorSpillQueue(_directory, (one * 10) + (one / 2));
        Assert.Equal(10, queue.Append(messages));
        Assert.Equal(10 * one, queue.Bytes);
        Assert.Equal(0, queue.Append(messages, 10));

        // Reading frees room.
        Assert.Equal(4, queue.Peek(4, long.MaxValue).Count);
        queue.Commit();
        Assert.Equal(4, queue.Append(messages, 10));
        Assert.Equal(Payloads(messages[4..14]), Payloads(DrainAll(queue, 100)));
    }

    [Fact]
    public void AReopenedQueue_ResumesAfterWhatWasCommitted_AndRedeliversWhatWasOnlyPeeked()
    {
        var messages = Messages(0, 10, payloadBytes: 10);
        using (var queue = new ConnectorSpillQueue(_directory, 1 << 20))
        {
            queue.Append(messages);
            Assert.Equal(4, queue.Peek(4, long.MaxValue).Count);
            queue.Commit();
            Assert.Equal(3, queue.Peek(3, long.MaxValue).Count); // not committed: delivered again after a restart
        }

        using (var reopened = new ConnectorSpillQueue(_directory, 1 << 20))
        {
            Assert.Equal(6, reopened.Count);
            Assert.Equal(0, reopened.Discarded);
            reopened.Append(Messages(10, 2, payloadBytes: 10));
            Assert.Equal(Payloads(Messages(4, 8, payloadBytes: 10)), Payloads(DrainAll(reopened, 3)));
        }

        using var empty = new ConnectorSpillQueue(_directory, 1 << 20);
        Assert.Equal(0, empty.Count);
        Assert.Empty(empty.Peek(10, long.MaxValue));
    }

    [Fact]
    public void ATornLastRecord_IsCutOffAtOpen_AndCounted_AndLaterAppendsStillFollow()
    {
        var messages = Messages(0, 5, payloadBytes: 50);
        using (var queue = new ConnectorSpillQueue(_directory, 1 << 20))
        {
            queue.Append(messages);
        }

        // A crash in the middle of writing the last record.
        var segment = Directory.GetFiles(_directory, "*.seg").Single();
        using (var stream = new FileStream(segment, FileMode.Open))
        {
            stream.SetLength(stream.Length - 3);
        }

        using var reopened = new ConnectorSpillQueue(_directory, 1 << 20);
        Assert.Equal(4, reopened.Count);
        Assert.Equal(ConnectorSpillRecord.Length(messages[4]) - 3, reopened.Discarded);
        Assert.Equal(1, reopened.DiscardedRecords);
        reopened.Append(Messages(5, 2, payloadBytes: 50));
        Assert.Equal(Payloads([.. messages[..4], .. Messages(5, 2, payloadBytes: 50)]), Payloads(DrainAll(reopened, 2)));
    }

    [Fact]
    public void TheDirectoryIs0700_AndItsFiles0600()
    {
        using var queue = new ConnectorSpillQueue(_directory, 1 << 20);
        queue.Append(Messages(0, 3, payloadBytes: 10));
        queue.Peek(1, long.MaxValue);
        queue.Commit();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_directory));
        var files = Directory.GetFiles(_directory);
        Assert.Contains(files, static f => f.EndsWith("cursor", StringComparison.Ordinal));
        Assert.All(files, static f => Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f)));
    }

    private static List<ConnectorMessage> DrainAll(ConnectorSpillQueue queue, int batch)
    {
        var all = new List<ConnectorMessage>();
        while (true)
        {
            var read = queue.Peek(batch, long.MaxValue);
            if (read.Count == 0)
            {
                return all;
            }

            Assert.True(read.Count <= batch);
            all.AddRange(read);
            queue.Commit();
        }
    }

    private static List<ConnectorMessage> Messages(int first, int count, int payloadBytes) =>
        [.. Enumerable.Range(first, count).Select(i =>
        {
            var text = i.ToString(CultureInfo.InvariantCulture);
            return new ConnectorMessage("d1", "devices/d1/telemetry", Encoding.ASCII.GetBytes(text.PadRight(payloadBytes, '.')), 1, false, DateTimeOffset.FromUnixTimeSeconds(1_700_000_000 + i));
        })];

    private static List<string> Payloads(IEnumerable<ConnectorMessage> messages) => [.. messages.Select(static m => Encoding.ASCII.GetString(m.Payload.Span))];
}

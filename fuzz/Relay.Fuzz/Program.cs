using SharpFuzz;

namespace Relay.Fuzz;

/// <summary>
/// AFL harness for the server's engines (docs/fuzzing.md). <c>Relay.Fuzz mqtt|stun</c> runs under afl-fuzz
/// (SharpFuzz's fork server, input on stdin); <c>Relay.Fuzz mqtt|stun FILE-OR-DIR...</c> runs inputs once each
/// without AFL (regression checks, crash triage); <c>Relay.Fuzz seeds DIR</c> writes the seed corpus.
/// </summary>
internal static class Program
{
    private const int MaxInput = 64 * 1024;

    public static int Main(string[] args)
    {
        GiveCoverageSomewhereToGo();
        if (args.Length == 2 && args[0] == "seeds")
        {
            Seeds.Write(args[1]);
            return 0;
        }

        if (args.Length < 1 || CreateTarget(args[0]) is not { } target)
        {
            Console.Error.WriteLine("usage: Relay.Fuzz mqtt|stun [FILE-OR-DIR...] | Relay.Fuzz seeds DIR");
            return 2;
        }

        using (target)
        {
            if (args.Length == 1)
            {
                // Persistent mode: one process runs many inputs; AFL restarts it only after a crash. An exception
                // out of Execute is reported to AFL as a crash.
                var buffer = new byte[MaxInput];
                Fuzzer.Run(stream => target.Execute(buffer.AsSpan(0, ReadAll(stream, buffer))));
                return 0;
            }

            return Replay(target, args[0], args.Skip(1));
        }
    }

    /// <summary>
    /// Instrumented assemblies (scripts/fuzz.sh) write coverage through SharpFuzz's trace pointer, which only
    /// <see cref="Fuzzer.Run(Action{Stream})"/> sets up. A scratch map until then lets the target be built first
    /// (its start-up is then not counted as any input's coverage) and lets replay run an instrumented build.
    /// </summary>
    private static unsafe void GiveCoverageSomewhereToGo()
    {
        if (SharpFuzz.Common.Trace.SharedMem == null)
        {
            SharpFuzz.Common.Trace.SharedMem = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(1 << 16);
        }
    }

    private static IFuzzTarget? CreateTarget(string name) => name switch
    {
        "mqtt" => new MqttTarget(),
        "stun" => new StunTarget(),
        _ => null,
    };

    /// <summary>Each file once; prints the failures and returns 1 when any input failed.</summary>
    private static int Replay(IFuzzTarget target, string name, IEnumerable<string> paths)
    {
        var files = paths.SelectMany(static p => Directory.Exists(p) ? Directory.GetFiles(p).Order(StringComparer.Ordinal) : (IEnumerable<string>)[p]).ToList();
        var failed = 0;
        foreach (var file in files)
        {
            try
            {
                target.Execute(File.ReadAllBytes(file));
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failed++;
                Console.Error.WriteLine($"{name}: {file}: {e}");
            }
        }

        Console.WriteLine($"{name}: {files.Count} inputs, {failed} failed");
        return failed == 0 ? 0 : 1;
    }

    private static int ReadAll(Stream stream, byte[] buffer)
    {
        var total = 0;
        int read;
        while (total < buffer.Length && (read = stream.Read(buffer, total, buffer.Length - total)) > 0)
        {
            total += read;
        }

        return total;
    }
}

/// <summary>One engine under test: runs an input to completion and throws <see cref="FuzzFinding"/> (or whatever escaped) on a fault.</summary>
internal interface IFuzzTarget : IDisposable
{
    void Execute(ReadOnlySpan<byte> input);
}

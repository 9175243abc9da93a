using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Relay.LoadGen;

internal enum LoadTransport
{
    Udp,
    Tcp,
}

internal enum UdpIo
{
    /// <summary>Linux: dedicated threads with epoll + recvmmsg/sendmmsg batches.</summary>
    Batched,

    /// <summary>Portable: one async receive loop and one sendto per datagram per socket.</summary>
    Simple,
}

internal sealed class LoadOptions
{
    public required IPEndPoint Target { get; init; }

    public string TargetText { get; init; } = "";

    public string Label { get; init; } = "";

    public LoadTransport Transport { get; init; } = LoadTransport.Udp;

    public double DurationSeconds { get; init; } = 10;

    public double WarmupSeconds { get; init; } = 2;

    public int Sockets { get; init; } = 32;

    public int Window { get; init; } = 32;

    public int TimeoutMs { get; init; } = 200;

    public bool Fingerprint { get; init; }

    public bool InlineCompletions { get; init; } = true;

    public bool Connected { get; init; }

    public bool Quiet { get; init; }

    public UdpIo Io { get; init; } = UdpIo.Batched;

    public int Threads { get; init; } = 1;

    public bool Gso { get; init; } = true;

    public const string Usage = """
        Relay.LoadGen - STUN Binding and TURN relay load generator (any RFC 8489 / RFC 8656 server)

        usage:
          Relay.LoadGen stun  --target HOST:PORT [options]   measure Binding transactions/second
          Relay.LoadGen probe --target HOST:PORT [--transport udp|tcp] [--wait SECONDS]
                                                               exit 0 once the server answers a Binding
          Relay.LoadGen turn  --target IP:PORT [options]     TURN relay: allocations/s, bytes per
                                                               allocation, relayed round trips/s, latency

        stun options:
          --transport udp|tcp   default udp; tcp = one connection per --sockets, pipelined
          --duration SECONDS    measured time (default 10)
          --warmup SECONDS      unmeasured time before it (default 2)
          --sockets N           source sockets/connections, each its own source port (default 32)
          --window N            outstanding transactions per socket (default 32, max 65535)
          --timeout-ms N        declare a transaction lost and replace it after this (default 200)
          --fingerprint         add a FINGERPRINT attribute (CRC-32) to every request
          --io batched|simple   UDP I/O. batched (default on 64-bit Linux): --threads dedicated
                                threads, each driving its share of the sockets through epoll
                                with one recvmmsg/sendmmsg per ready socket. simple (default
                                elsewhere): async receive loop and one sendto per datagram.
          --threads N           batched: I/O threads (default 1; sockets are split among them)
          --no-gso              batched: one datagram per sendmmsg entry. By default each
                                socket's batch leaves as one UDP GSO packet (UDP_SEGMENT), which
                                the kernel splits into ordinary datagrams before the server's
                                socket sees them: same traffic for the server, less generator CPU
          --connected           UDP: connect() each socket and use send/recv instead of
                                sendto/recvfrom (cheaper for the generator; same wire traffic)
          --no-inline-completions  simple: run socket continuations on the thread pool (slower)
          --label TEXT          echoed in the RESULT line
          --quiet               no per-second progress lines
        """;

    public static bool TryParse(string[] args, int start, out LoadOptions? options, out double waitSeconds, out string? error)
    {
        options = null;
        waitSeconds = 5;
        error = null;
        string? target = null;
        var label = "";
        var transport = LoadTransport.Udp;
        double duration = 10, warmup = 2;
        int sockets = 32, window = 32, timeoutMs = 200, threads = 1;
        var io = LinuxNative.IsSupported ? UdpIo.Batched : UdpIo.Simple;
        bool fingerprint = false, inline = true, quiet = false, connected = false, gso = true;

        for (var i = start; i < args.Length; i++)
        {
            var arg = args[i];
            string Next()
            {
                if (i + 1 >= args.Length)
                {
                    throw new FormatException($"{arg} needs a value");
                }

                return args[++i];
            }

            try
            {
                switch (arg)
                {
                    case "--target": target = Next(); break;
                    case "--label": label = Next(); break;
                    case "--transport":
                        transport = Next().ToUpperInvariant() switch
                        {
                            "UDP" => LoadTransport.Udp,
                            "TCP" => LoadTransport.Tcp,
                            var other => throw new FormatException($"unknown transport '{other}'"),
                        };
                        break;
                    case "--duration": duration = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--warmup": warmup = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--wait": waitSeconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--sockets": sockets = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--window": window = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--timeout-ms": timeoutMs = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--fingerprint": fingerprint = true; break;
                    case "--no-inline-completions": inline = false; break;
                    case "--quiet": quiet = true; break;
                    case "--connected": connected = true; break;
                    case "--gso": gso = true; break;
                    case "--no-gso": gso = false; break;
                    case "--threads": threads = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--io":
                        io = Next().ToUpperInvariant() switch
                        {
                            "BATCHED" => UdpIo.Batched,
                            "SIMPLE" => UdpIo.Simple,
                            var other => throw new FormatException($"unknown --io '{other}'"),
                        };
                        break;
                    default: throw new FormatException($"unknown option '{arg}'");
                }
            }
            catch (FormatException e)
            {
                error = e.Message;
                return false;
            }
        }

        if (target is null)
        {
            error = "--target is required";
            return false;
        }

        if (sockets < 1 || window < 1 || window > ushort.MaxValue || timeoutMs < 1 || duration <= 0 || warmup < 0)
        {
            error = "sockets/window/timeout/duration out of range";
            return false;
        }

        if (threads < 1 || threads > sockets)
        {
            error = "--threads must be between 1 and --sockets";
            return false;
        }

        if (io == UdpIo.Batched && transport == LoadTransport.Udp && !LinuxNative.IsSupported)
        {
            error = "--io batched needs 64-bit Linux";
            return false;
        }

        var endpoint = ResolveTarget(target);
        if (endpoint is null)
        {
            error = $"cannot resolve target '{target}' (expected HOST:PORT)";
            return false;
        }

        options = new LoadOptions
        {
            Target = endpoint,
            TargetText = target,
            Label = label,
            Transport = transport,
            DurationSeconds = duration,
            WarmupSeconds = warmup,
            Sockets = sockets,
            Window = window,
            TimeoutMs = timeoutMs,
            Fingerprint = fingerprint,
            InlineCompletions = inline,
            Quiet = quiet,
            Connected = connected,
            Io = io,
            Threads = threads,
            Gso = gso,
        };
        return true;
    }

    private static IPEndPoint? ResolveTarget(string text)
    {
        if (IPEndPoint.TryParse(text, out var endpoint) && endpoint.Port != 0)
        {
            return endpoint;
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port)
            || port is < 1 or > 65535)
        {
            return null;
        }

        try
        {
            var addresses = Dns.GetHostAddresses(text[..colon]);
            var address = Array.Find(addresses, a => a.AddressFamily == AddressFamily.InterNetwork)
                ?? (addresses.Length > 0 ? addresses[0] : null);
            return address is null ? null : new IPEndPoint(address, port);
        }
        catch (SocketException)
        {
            return null;
        }
    }
}

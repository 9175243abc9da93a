using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Relay.LoadGen;

/// <summary>Options of the <c>turn</c> command.</summary>
internal sealed class TurnLoadOptions
{
    public required IPEndPoint Target { get; init; }

    public string TargetText { get; init; } = "";

    public string Label { get; init; } = "";

    public string User { get; init; } = "bench";

    public string Password { get; init; } = "benchpw";

    public required IPAddress PeerAddress { get; init; }

    public int Allocations { get; init; } = 10_000;

    public int Active { get; init; } = 256;

    public int Window { get; init; } = 2;

    public int InFlight { get; init; } = 64;

    public int Peers { get; init; } = 4;

    public int Payload { get; init; } = 128;

    public double WarmupSeconds { get; init; } = 2;

    public double DurationSeconds { get; init; } = 8;

    public double Rate { get; init; } = 20_000;

    public double LatencySeconds { get; init; } = 5;

    public int TimeoutMs { get; init; } = 500;

    public int SetupTimeoutMs { get; init; } = 1000;

    public int Retries { get; init; } = 5;

    public int ServerPid { get; init; }

    public double SettleSeconds { get; init; } = 2;

    public int ClientPortBase { get; init; } = 20000;

    public bool Gso { get; init; } = true;

    public bool Release { get; init; } = true;

    public bool Direct { get; init; } = true;

    public bool WarmPass { get; init; } = true;

    public const string Usage = """
        Relay.LoadGen turn - TURN relay (RFC 8656) load against any server, UDP, long-term credentials

        usage:
          Relay.LoadGen turn --target HOST:PORT [options]

        phases: warm set (--active allocations with a permission and a channel each, to an echo peer),
        warm-up round trips, server RSS, --allocations more allocations (cold pass, timed) with a
        permission and a channel each, server RSS again (bytes per allocation), Refresh(0) of those and
        the same number again (warm pass: the allocation rate reported), closed-loop relayed round
        trips over the warm set with the others idle, open-loop latency at --rate through the relay
        and directly (the baseline), then Refresh(0) of everything.

        options:
          --user NAME / --password PW   long-term credentials (default bench / benchpw); realm from the 401
          --allocations N       allocations created and timed after the warm set (default 10000)
          --active N            warm set: allocations that carry the traffic (default 256)
          --window N            closed loop: round trips outstanding per active allocation (default 2)
          --inflight N          setup: allocations in progress at once (default 64)
          --peers N             echo peer sockets, allocation i uses peer i % N (default 4)
          --peer-address IP     address the echo peers bind (default: loopback of the target's family)
          --payload BYTES       application data per ChannelData message (default 128, >= 28)
          --warmup SECONDS      unmeasured round trips before the memory baseline (default 2)
          --duration SECONDS    measured closed-loop round trips (default 8)
          --rate N              open-loop messages per second in total, latency phase (default 20000; 0 skips)
          --latency-duration S  measured open-loop time, relayed and direct each (default 5)
          --timeout-ms N        a round trip unanswered this long is lost (default 500)
          --setup-timeout-ms N  retransmit a setup request after this (default 1000), --retries times (5)
          --server-pid PID      read the server's VmRSS and CPU from /proc (memory and per-core figures)
          --settle SECONDS      wait before each RSS reading (default 2)
          --client-port-base N  client sockets bind upwards from here, below 49152 (default 20000; 0 = ephemeral)
          --no-gso              closed loop: one datagram per sendmmsg entry instead of UDP GSO runs
          --no-direct           skip the direct (no relay) latency baseline
          --no-warm-pass        time only the first (cold) allocation pass
          --no-release          leave the allocations at the end (they expire with their lifetime)
          --label TEXT          echoed in the RESULT line
        """;

    public static bool TryParse(string[] args, int start, out TurnLoadOptions? options, out string? error)
    {
        options = null;
        error = null;
        string? target = null, label = "", user = "bench", password = "benchpw", peerAddress = null;
        int allocations = 10_000, active = 256, window = 2, inFlight = 64, peers = 4, payload = 128;
        int timeoutMs = 500, setupTimeoutMs = 1000, retries = 5, serverPid = 0, portBase = 20000;
        double warmup = 2, duration = 8, rate = 20_000, latency = 5, settle = 2;
        bool gso = true, release = true, direct = true, warmPass = true;
        for (var i = start; i < args.Length; i++)
        {
            var arg = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{arg} needs a value");
            int Int() => int.Parse(Next(), CultureInfo.InvariantCulture);
            double Dbl() => double.Parse(Next(), CultureInfo.InvariantCulture);
            try
            {
                switch (arg)
                {
                    case "--target": target = Next(); break;
                    case "--label": label = Next(); break;
                    case "--user": user = Next(); break;
                    case "--password": password = Next(); break;
                    case "--peer-address": peerAddress = Next(); break;
                    case "--allocations": allocations = Int(); break;
                    case "--active": active = Int(); break;
                    case "--window": window = Int(); break;
                    case "--inflight": inFlight = Int(); break;
                    case "--peers": peers = Int(); break;
                    case "--payload": payload = Int(); break;
                    case "--warmup": warmup = Dbl(); break;
                    case "--duration": duration = Dbl(); break;
                    case "--rate": rate = Dbl(); break;
                    case "--latency-duration": latency = Dbl(); break;
                    case "--timeout-ms": timeoutMs = Int(); break;
                    case "--setup-timeout-ms": setupTimeoutMs = Int(); break;
                    case "--retries": retries = Int(); break;
                    case "--server-pid": serverPid = Int(); break;
                    case "--settle": settle = Dbl(); break;
                    case "--client-port-base": portBase = Int(); break;
                    case "--no-gso": gso = false; break;
                    case "--no-direct": direct = false; break;
                    case "--no-release": release = false; break;
                    case "--no-warm-pass": warmPass = false; break;
                    default: throw new FormatException($"unknown option '{arg}'");
                }
            }
            catch (FormatException e)
            {
                error = e.Message;
                return false;
            }
        }

        if (target is null || !IPEndPoint.TryParse(target, out var endpoint) || endpoint.Port == 0)
        {
            error = "--target IP:PORT is required";
            return false;
        }

        if (allocations < 0 || active < 1 || window < 1 || window > 1024 || inFlight < 1 || peers < 1 || payload < TurnClients.PayloadHeader || payload > 1400
            || timeoutMs < 1 || setupTimeoutMs < 1 || retries < 0 || duration <= 0 || warmup < 0 || rate < 0 || latency <= 0 || settle < 0
            || portBase is < 0 or > 49151)
        {
            error = "an option is out of range";
            return false;
        }

        if (!LinuxNative.IsSupported)
        {
            error = "the turn command needs 64-bit Linux (epoll, recvmmsg/sendmmsg)";
            return false;
        }

        IPAddress peer;
        if (peerAddress is null)
        {
            peer = endpoint.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Loopback : IPAddress.Loopback;
        }
        else if (!IPAddress.TryParse(peerAddress, out peer!) || peer.AddressFamily != endpoint.AddressFamily)
        {
            error = "--peer-address must be an IP of the target's family";
            return false;
        }

        options = new TurnLoadOptions
        {
            Target = endpoint,
            TargetText = target,
            Label = label,
            User = user,
            Password = password,
            PeerAddress = peer,
            Allocations = allocations,
            Active = active,
            Window = window,
            InFlight = inFlight,
            Peers = peers,
            Payload = payload,
            WarmupSeconds = warmup,
            DurationSeconds = duration,
            Rate = rate,
            LatencySeconds = latency,
            TimeoutMs = timeoutMs,
            SetupTimeoutMs = setupTimeoutMs,
            Retries = retries,
            ServerPid = serverPid,
            SettleSeconds = settle,
            ClientPortBase = portBase,
            Gso = gso,
            Release = release,
            Direct = direct,
            WarmPass = warmPass,
        };
        return true;
    }
}

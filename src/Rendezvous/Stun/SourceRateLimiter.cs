using System.Diagnostics;
using System.Numerics;
using Relay.Protocol.Stun;

namespace Relay.Rendezvous.Stun;

/// <summary>
/// A token bucket per source IP address in a fixed-size, 4-way set-associative table: memory is
/// bounded no matter how many sources (spoofed or not) appear, and nothing is allocated per packet.
/// When a set is full the least recently seen source is evicted, which at worst gives an evicted
/// source a fresh bucket: a bounded leak, never a denial of service to others.
/// </summary>
public sealed class SourceRateLimiter
{
    private const int Ways = 4;
    private const int LockStripes = 64;

    private readonly Entry[] _entries;
    private readonly int _setMask;
    private readonly object[] _locks;
    private readonly double _tokensPerTick;
    private readonly double _burst;

    /// <summary>Creates a limiter.</summary>
    public SourceRateLimiter(int requestsPerSecond, int burst, int maxTrackedSources)
    {
        var sets = (int)Math.Max(1, BitOperations.RoundUpToPowerOf2((uint)Math.Max(Ways, maxTrackedSources)) / Ways);
        _entries = new Entry[sets * Ways];
        _setMask = sets - 1;
        _locks = new object[LockStripes];
        for (var i = 0; i < _locks.Length; i++)
        {
            _locks[i] = new object();
        }

        _tokensPerTick = requestsPerSecond / (double)Stopwatch.Frequency;
        _burst = burst;
    }

    /// <summary>Takes one token for <paramref name="source"/>'s IP address (its port is ignored).</summary>
    public bool TryAcquire(in StunAddress source)
    {
        var key = source.WithPort(0);
        var set = key.GetHashCode() & _setMask;
        var now = Stopwatch.GetTimestamp();
        lock (_locks[set & (LockStripes - 1)])
        {
            var ways = _entries.AsSpan(set * Ways, Ways);
            var victim = 0;
            for (var i = 0; i < ways.Length; i++)
            {
                ref var entry = ref ways[i];
                if (entry.InUse && entry.Key == key)
                {
                    entry.Tokens = Math.Min(_burst, entry.Tokens + ((now - entry.LastTicks) * _tokensPerTick));
                    entry.LastTicks = now;
                    if (entry.Tokens < 1)
                    {
                        return false;
                    }

                    entry.Tokens -= 1;
                    return true;
                }

                if (!entry.InUse || (ways[victim].InUse && entry.LastTicks < ways[victim].LastTicks))
                {
                    victim = i;
                }
            }

            ways[victim] = new Entry { Key = key, InUse = true, LastTicks = now, Tokens = _burst - 1 };
            return true;
        }
    }

    private struct Entry
    {
        public StunAddress Key;
        public bool InUse;
        public long LastTicks;
        public double Tokens;
    }
}

using System.Collections.Concurrent;
using System.Globalization;

namespace Relay.LoadGen;

/// <summary>
/// What the soak's parts report, and the losses they add up to. Telemetry is tracked per device and
/// sequence number: a message counts as sent once the server PUBACKed it (from then on MQTT 3.1.1 §4.3.2
/// makes the broker responsible for it), and as arrived when the back-end subscriber got it; an acked
/// message that never arrives is a loss, one that arrives twice a duplicate (allowed at QoS 1). Commands
/// are tracked by id from the 202 to the final state the back end read.
/// </summary>
internal sealed class SoakLedger
{
    private readonly SequenceTrack[] _telemetry;
    private readonly ConcurrentDictionary<string, string?> _commands = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, byte> _commandsSeenByDevices = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _refusals = new(StringComparer.Ordinal);

    // Telemetry.
    public long TelemetryPublished;
    public long Resent;
    public long TelemetrySkipped;
    public long TelemetryForeign;

    // Commands.
    public long CommandsPosted;
    public long CommandsNotAccepted;
    public long CommandHttpErrors;
    public long CommandResultsAcked;
    public long CommandFollowsSkipped;

    /// <summary>--self-check: commands the devices received (every Nth left unanswered), telemetry the subscriber forgot on purpose.</summary>
    public long SelfCheckCommands;
    public long SelfCheckTelemetry;

    // Rendezvous.
    public long RendezvousAttempts;
    public long RendezvousAnswered;
    public long RendezvousRefused;
    public long RendezvousAbandoned;
    public long RendezvousUnanswered;
    public long RendezvousOffers;
    public long RendezvousStarts;
    public long RendezvousOther;

    // Devices.
    public long Connects;
    public long ConnectFailures;
    public long ServerClosed;
    public long SessionsLost;
    public long VoluntaryDrops;

    // The back-end subscriber.
    public long SubscriberReconnects;

    public SoakLedger(int devices)
    {
        _telemetry = new SequenceTrack[devices];
        for (var i = 0; i < devices; i++)
        {
            _telemetry[i] = new SequenceTrack();
        }
    }

    public string? FirstCommandError;

    public void TelemetryAcked(int device, long seq) => _telemetry[device].Acked(seq);

    public void TelemetryReceived(int device, long seq) => _telemetry[device].Received(seq);

    /// <summary>(acked, received, lost, duplicates) over every device.</summary>
    public (long Acked, long Received, long Lost, long Duplicates) Telemetry()
    {
        long acked = 0, received = 0, lost = 0, duplicates = 0;
        foreach (var track in _telemetry)
        {
            var t = track.Totals();
            acked += t.Acked;
            received += t.Received;
            lost += t.Lost;
            duplicates += t.Duplicates;
        }

        return (acked, received, lost, duplicates);
    }

    public void CommandAccepted(string id) => _commands.TryAdd(id, null);

    public void CommandFinal(string id, string state) => _commands[id] = state;

    public void CommandSeenByDevice(string id) => _commandsSeenByDevices.TryAdd(id, 0);

    public void CommandRefused(string reason) => _refusals.AddOrUpdate(reason, 1, static (_, n) => n + 1);

    public int CommandsAccepted => _commands.Count;

    public int CommandsSeenByDevices => _commandsSeenByDevices.Count;

    public int CommandsNotFinal => _commands.Count(static c => c.Value is null);

    /// <summary>Accepted commands by final state ("open" = no final state read).</summary>
    public SortedDictionary<string, int> CommandStates()
    {
        var states = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (var state in _commands.Values)
        {
            var key = state ?? "open";
            states[key] = states.GetValueOrDefault(key) + 1;
        }

        return states;
    }

    public string Refusals => _refusals.IsEmpty ? "none"
        : string.Join(',', _refusals.OrderBy(static p => p.Key, StringComparer.Ordinal).Select(static p => p.Key + ":" + p.Value.ToString(CultureInfo.InvariantCulture)));

    /// <summary>
    /// Sequence numbers of one device's telemetry, as two bit sets (acked, received) that grow with the
    /// highest number; at one message per 30 s a 30-minute run needs a few words per device.
    /// </summary>
    private sealed class SequenceTrack
    {
        private readonly Lock _lock = new();
        private ulong[] _acked = new ulong[2];
        private ulong[] _received = new ulong[2];
        private long _duplicates;

        public void Acked(long seq)
        {
            lock (_lock)
            {
                Set(ref _acked, seq);
            }
        }

        public void Received(long seq)
        {
            lock (_lock)
            {
                if (!Set(ref _received, seq))
                {
                    _duplicates++;
                }
            }
        }

        public (long Acked, long Received, long Lost, long Duplicates) Totals()
        {
            lock (_lock)
            {
                long acked = 0, received = 0, lost = 0;
                for (var i = 0; i < _acked.Length; i++)
                {
                    var r = i < _received.Length ? _received[i] : 0;
                    acked += (long)ulong.PopCount(_acked[i]);
                    lost += (long)ulong.PopCount(_acked[i] & ~r);
                }

                foreach (var word in _received)
                {
                    received += (long)ulong.PopCount(word);
                }

                return (acked, received, lost, _duplicates);
            }
        }

        /// <summary>Sets the bit; false when it was set already.</summary>
        private static bool Set(ref ulong[] bits, long seq)
        {
            var word = (int)(seq >> 6);
            if (word >= bits.Length)
            {
                Array.Resize(ref bits, Math.Max(word + 1, bits.Length * 2));
            }

            var mask = 1UL << (int)(seq & 63);
            var had = (bits[word] & mask) != 0;
            bits[word] |= mask;
            return !had;
        }
    }
}

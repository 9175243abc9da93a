using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using Relay.Server.Transport.Linux;
using static Relay.LoadGen.LinuxNative;

namespace Relay.LoadGen;

/// <summary>What one setup pass does for each allocation.</summary>
internal enum SetupKind
{
    /// <summary>Allocate without credentials, take REALM and NONCE from the 401, Allocate again signed (RFC 8656 §7.1).</summary>
    Allocate,

    /// <summary>CreatePermission for the allocation's echo peer, then ChannelBind to it (RFC 8656 §9, §12).</summary>
    Bind,

    /// <summary>Refresh with LIFETIME 0: delete the allocation (RFC 8656 §8).</summary>
    Release,
}

/// <summary>Outcome of one setup pass.</summary>
internal sealed class SetupResult
{
    public int Done;
    public int Failed;
    public long Transactions;
    public long Retransmits;
    public long StaleNonces;
    public long BadIntegrity;
    public long Invalid;
    public long SendErrors;
    public double Seconds;
    public readonly Dictionary<int, int> FailureCodes = [];

    public string FailureText => FailureCodes.Count == 0 ? "none"
        : string.Join(',', FailureCodes.OrderBy(p => p.Key).Select(p => FormattableString.Invariant($"{p.Key switch { 0 => "timeout", -1 => "bad-integrity", _ => p.Key.ToString(System.Globalization.CultureInfo.InvariantCulture) }}x{p.Value}")));
}

internal sealed unsafe partial class TurnClients
{
    // Per allocation: 0 idle, 1 first request out, 2 second request out, 3 done, 4 failed.
    private const byte Idle = 0;
    private const byte First = 1;
    private const byte Second = 2;
    private const byte Finished = 3;
    private const byte Failed = 4;
    private const int MaxNonceRetries = 4;

    private readonly TurnCredentials _credentials;
    private readonly byte[] _setupState;
    private readonly byte[] _tries;
    private readonly long[] _deadline;
    private readonly byte[] _transactionIds;
    private readonly byte[]?[] _nonces;
    /// <summary>Channel number bound on every allocation: the first of RFC 8656 §12's range.</summary>
    private const ushort BoundChannel = 0x4000;

    /// <summary>Relayed addresses the server granted, by allocation (for the report; never used to send).</summary>
    public IPEndPoint?[]? Relayed { get; private set; }

    /// <summary>
    /// Runs one setup step for allocations [<paramref name="from"/>, <paramref name="from"/> +
    /// <paramref name="count"/>) with at most <paramref name="inFlight"/> of them in progress at once.
    /// A request unanswered after <paramref name="timeoutMs"/> is retransmitted (same transaction id)
    /// up to <paramref name="retries"/> times, then the allocation counts as failed (code "timeout").
    /// </summary>
    public SetupResult RunSetup(SetupKind kind, int from, int count, int inFlight, int timeoutMs, int retries)
    {
        Relayed ??= new IPEndPoint?[_sockets.Length];
        var result = new SetupResult();
        var timeoutTicks = timeoutMs * Stopwatch.Frequency / 1000;
        var sweepTicks = Math.Max(1, timeoutMs / 4) * Stopwatch.Frequency / 1000;
        var end = from + count;
        var next = from;
        var active = 0;
        var start = Stopwatch.GetTimestamp();
        var nextSweep = start + sweepTicks;
        for (var i = from; i < end; i++)
        {
            _setupState[i] = Idle;
            _tries[i] = 0;
        }

        while (result.Done + result.Failed < count)
        {
            while (active < inFlight && next < end)
            {
                if (kind == SetupKind.Release && _nonces[next] is null)
                {
                    // Never allocated: nothing to release.
                    _setupState[next++] = Finished;
                    result.Done++;
                    continue;
                }

                _setupState[next] = First;
                NewTransaction(next);
                SendSetup(kind, next, timeoutTicks, result);
                next++;
                active++;
            }

            var ready = Wait(5);
            for (var e = 0; e < ready; e++)
            {
                var s = ReadyIndex(e);
                var received = ReceiveBatchFrom(s);
                for (var k = 0; k < received; k++)
                {
                    if (!FromTarget(k) || s < from || s >= end)
                    {
                        result.Invalid++;
                        continue;
                    }

                    var before = _setupState[s];
                    HandleSetupResponse(kind, s, Received(k), timeoutTicks, result);
                    if (before is First or Second && _setupState[s] is Finished or Failed)
                    {
                        active--;
                    }
                }
            }

            var now = Stopwatch.GetTimestamp();
            if (now >= nextSweep)
            {
                nextSweep = now + sweepTicks;
                for (var i = from; i < next; i++)
                {
                    if (_setupState[i] is not (First or Second) || _deadline[i] > now)
                    {
                        continue;
                    }

                    if (++_tries[i] > retries)
                    {
                        Fail(i, 0, result);
                        active--;
                        continue;
                    }

                    result.Retransmits++;
                    SendSetup(kind, i, timeoutTicks, result);
                }
            }
        }

        result.Seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        return result;
    }

    private void HandleSetupResponse(SetupKind kind, int i, ReadOnlySpan<byte> message, long timeoutTicks, SetupResult result)
    {
        var state = _setupState[i];
        if (state is not (First or Second) || !TurnWire.TryReadHeader(message, out var type)
            || !message.Slice(StunWire.TransactionIdOffset, StunWire.TransactionIdLength).SequenceEqual(TransactionId(i))
            || TurnWire.Method(type) != ExpectedMethod(kind, state))
        {
            // A duplicate answer to a retransmission, or not ours.
            result.Invalid++;
            return;
        }

        if (TurnWire.IsSuccess(type))
        {
            if (kind != SetupKind.Allocate || state == Second)
            {
                if (!TurnWire.VerifyIntegrity(message, _credentials.Key))
                {
                    result.BadIntegrity++;
                    Fail(i, -1, result);
                    return;
                }
            }

            result.Transactions++;
            if (kind == SetupKind.Allocate && state == Second)
            {
                if (TurnWire.TryFind(message, TurnWire.XorRelayedAddress, out var relayed, out _))
                {
                    Relayed![i] = TurnWire.ReadXorAddress(relayed, TransactionId(i));
                }

                Finish(i, result);
            }
            else if (kind == SetupKind.Bind && state == First)
            {
                _setupState[i] = Second;
                _tries[i] = 0;
                NewTransaction(i);
                SendSetup(kind, i, timeoutTicks, result);
            }
            else
            {
                Finish(i, result);
            }

            return;
        }

        if (!TurnWire.IsError(type))
        {
            result.Invalid++;
            return;
        }

        result.Transactions++;
        var code = TurnWire.ReadErrorCode(message);
        var firstChallenge = kind == SetupKind.Allocate && state == First && code == 401;
        if (firstChallenge || code is 438 or 401)
        {
            // 401 to the unsigned Allocate is the expected challenge; 438 (stale nonce), or a 401 to a
            // signed request, hands over a fresh NONCE to retry with (RFC 8489 §9.2.5).
            if (!TurnWire.TryFind(message, TurnWire.Nonce, out var nonce, out _)
                || (!firstChallenge && ++_tries[i] > MaxNonceRetries))
            {
                Fail(i, code, result);
                return;
            }

            if (TurnWire.TryFind(message, TurnWire.Realm, out var realm, out _))
            {
                _credentials.SetRealm(realm);
            }

            if (!firstChallenge)
            {
                result.StaleNonces++;
            }

            _nonces[i] = nonce.ToArray();
            if (firstChallenge)
            {
                _setupState[i] = Second;
                _tries[i] = 0;
            }

            NewTransaction(i);
            SendSetup(kind, i, timeoutTicks, result);
            return;
        }

        if (kind == SetupKind.Release && code == 437)
        {
            // Allocation mismatch: already gone, which is what Release wanted.
            Finish(i, result);
            return;
        }

        Fail(i, code, result);
    }

    private static ushort ExpectedMethod(SetupKind kind, byte state) => kind switch
    {
        SetupKind.Allocate => TurnWire.AllocateRequest,
        SetupKind.Bind => state == First ? TurnWire.CreatePermissionRequest : TurnWire.ChannelBindRequest,
        _ => TurnWire.RefreshRequest,
    };

    private void Finish(int i, SetupResult result)
    {
        _setupState[i] = Finished;
        result.Done++;
    }

    private void Fail(int i, int code, SetupResult result)
    {
        _setupState[i] = Failed;
        result.Failed++;
        result.FailureCodes[code] = result.FailureCodes.GetValueOrDefault(code) + 1;
    }

    private Span<byte> TransactionId(int i) => _transactionIds.AsSpan(i * StunWire.TransactionIdLength, StunWire.TransactionIdLength);

    private void NewTransaction(int i)
    {
        var id = TransactionId(i);
        BinaryPrimitives.WriteUInt64LittleEndian(id, NextRandom());
        BinaryPrimitives.WriteUInt32BigEndian(id[8..], (uint)i);
    }

    /// <summary>Builds the request for allocation <paramref name="i"/>'s current state and sends it.</summary>
    private void SendSetup(SetupKind kind, int i, long timeoutTicks, SetupResult result)
    {
        Span<byte> buffer = stackalloc byte[1024];
        var state = _setupState[i];
        var type = ExpectedMethod(kind, state);
        var builder = new TurnWire.Builder(buffer, type, TransactionId(i));
        var peer = _peers[i % _peers.Length];
        switch (kind)
        {
            case SetupKind.Allocate:
                builder.AddRequestedTransportUdp();
                break;
            case SetupKind.Bind when state == First:
                builder.AddXorAddress(TurnWire.XorPeerAddress, peer);
                break;
            case SetupKind.Bind:
                builder.AddChannelNumber(BoundChannel);
                builder.AddXorAddress(TurnWire.XorPeerAddress, peer);
                break;
            default:
                builder.AddUInt32(TurnWire.Lifetime, 0);
                break;
        }

        int length;
        if (kind == SetupKind.Allocate && state == First)
        {
            length = builder.Finish();
        }
        else
        {
            builder.Add(TurnWire.Username, _credentials.UserUtf8);
            builder.Add(TurnWire.Realm, _credentials.RealmUtf8);
            builder.Add(TurnWire.Nonce, _nonces[i]);
            length = builder.FinishWithIntegrity(_credentials.Key);
        }

        _deadline[i] = Stopwatch.GetTimestamp() + timeoutTicks;
        fixed (byte* data = buffer)
        {
            if (LinuxEpoll.SendTo(_fds[i], data, (nuint)length, 0, _targetName, (uint)_targetNameLength) < 0)
            {
                // The deadline stands: it is retransmitted (and counted) like a lost request.
                result.SendErrors++;
            }
        }
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;

namespace Relay.LoadGen;

internal static class Probe
{
    /// <summary>Sends a Binding every 200 ms until one is answered or the wait expires.</summary>
    public static async Task<int> RunAsync(LoadOptions o, double waitSeconds)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(waitSeconds * Stopwatch.Frequency);
        var request = new byte[StunWire.RequestLength(o.Fingerprint)];
        var response = new byte[2048];
        var transactionId = new byte[StunWire.TransactionIdLength];
        while (Stopwatch.GetTimestamp() < deadline)
        {
            Random.Shared.NextBytes(transactionId);
            StunWire.WriteBindingRequest(request, transactionId, o.Fingerprint);
            using var attempt = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            try
            {
                if (await TryOnceAsync(o, request, response, transactionId, attempt.Token))
                {
                    Console.WriteLine($"probe: {o.TargetText} answered a Binding request");
                    return 0;
                }
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                // Not up yet (refused, or no answer within the attempt): retry until the deadline.
            }

            if (!attempt.IsCancellationRequested)
            {
                await Task.Delay(200);
            }
        }

        Console.Error.WriteLine($"probe: no Binding response from {o.TargetText} within {waitSeconds.ToString(CultureInfo.InvariantCulture)}s");
        return 1;
    }

    private static async Task<bool> TryOnceAsync(LoadOptions o, byte[] request, byte[] response, byte[] transactionId, CancellationToken cancellationToken)
    {
        var type = o.Transport == LoadTransport.Udp ? SocketType.Dgram : SocketType.Stream;
        var protocol = o.Transport == LoadTransport.Udp ? ProtocolType.Udp : ProtocolType.Tcp;
        using var socket = new Socket(o.Target.AddressFamily, type, protocol);
        await socket.ConnectAsync(o.Target, cancellationToken);
        await socket.SendAsync(request, SocketFlags.None, cancellationToken);
        var filled = 0;
        while (true)
        {
            var n = await socket.ReceiveAsync(response.AsMemory(filled), SocketFlags.None, cancellationToken);
            if (n == 0)
            {
                return false;
            }

            filled += n;
            if (o.Transport == LoadTransport.Udp)
            {
                return Matches(response.AsSpan(0, filled), transactionId);
            }

            if (filled >= StunWire.HeaderLength && filled >= StunWire.FrameLength(response))
            {
                return Matches(response.AsSpan(0, StunWire.FrameLength(response)), transactionId);
            }
        }
    }

    private static bool Matches(ReadOnlySpan<byte> message, ReadOnlySpan<byte> transactionId) =>
        StunWire.IsBindingSuccess(message)
        && message.Slice(StunWire.TransactionIdOffset, StunWire.TransactionIdLength).SequenceEqual(transactionId);
}

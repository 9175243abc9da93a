using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Stun;

namespace Relay.Server.Tests.DeviceClientNat;

/// <summary>
/// The classifier's decisions for NATs that loopback cannot produce. A stand-in RFC 5780 server on the
/// four address/port combinations of 127.0.0.1 and 127.0.0.2 reports the mapping a NAT of the chosen
/// kind would have made, and leaves unanswered what that NAT's filter would have dropped. (Real NATs
/// belong to the namespace lab; this checks the RFC 5780 §4.3/§4.4 logic over real sockets.)
/// </summary>
public sealed class NatClassificationTests
{
    private static readonly StunClientOptions Quick = new() { InitialRto = TimeSpan.FromMilliseconds(20), MaxRequests = 2, LastWaitMultiplier = 4 };

    [Theory]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.EndpointIndependent, NatType.FullCone)]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.AddressDependent, NatType.AddressRestricted)]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.AddressAndPortDependent, NatType.PortRestricted)]
    [InlineData(NatMappingBehavior.AddressDependent, NatFilteringBehavior.AddressAndPortDependent, NatType.Symmetric)]
    [InlineData(NatMappingBehavior.AddressAndPortDependent, NatFilteringBehavior.AddressAndPortDependent, NatType.Symmetric)]
    public async Task SimulatedNat_IsClassified(NatMappingBehavior mapping, NatFilteringBehavior filtering, NatType expected)
    {
        using var server = new SimulatedNatServer(mapping, filtering);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var result = await NatBehaviorDiscovery.DiscoverAsync(socket, server.Primary, Quick);

        Assert.Equal(mapping, result.Mapping);
        Assert.Equal(filtering, result.Filtering);
        Assert.Equal(expected, result.Type);
        Assert.True(result.IsBehindNat);
        Assert.Equal(SimulatedNatServer.PublicAddress, result.MappedAddress!.Address);
    }

    [Fact]
    public async Task SymmetricMapping_IsReportedBeforeTheFilteringTestsEnd()
    {
        // The filtering answers are held until the type has been reported, so the report cannot have waited for them.
        using var server = new SimulatedNatServer(NatMappingBehavior.AddressAndPortDependent, NatFilteringBehavior.EndpointIndependent) { HoldChangeRequests = true };
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var reported = new TaskCompletionSource<NatType>(TaskCreationOptions.RunContinuationsAsynchronously);
        var patient = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(500), MaxRequests = 3, LastWaitMultiplier = 4 };

        var discovery = NatBehaviorDiscovery.DiscoverAsync(socket, server.Primary, patient, t => reported.TrySetResult(t), CancellationToken.None);
        Assert.Equal(NatType.Symmetric, await reported.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(0, server.ChangeRequestsAnswered);
        server.HoldChangeRequests = false;
        var result = await discovery.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(NatFilteringBehavior.EndpointIndependent, result.Filtering);
        Assert.Equal(NatType.Symmetric, result.Type);
        Assert.True(server.ChangeRequestsAnswered >= 2, "both filtering tests were answered once released");
    }

    [Fact]
    public async Task EndpointIndependentMapping_IsReportedOnceWithTheFilteringOutcome()
    {
        using var server = new SimulatedNatServer(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.AddressDependent);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        List<NatType> reports = [];

        var result = await NatBehaviorDiscovery.DiscoverAsync(socket, server.Primary, Quick, reports.Add, CancellationToken.None);

        Assert.Equal([NatType.AddressRestricted], reports);
        Assert.Equal(NatType.AddressRestricted, result.Type);
    }

    private sealed class SimulatedNatServer : IDisposable
    {
        public static readonly IPAddress PublicAddress = IPAddress.Parse("198.51.100.1");
        private static readonly IPAddress Alternate = IPAddress.Parse("127.0.0.2");

        private readonly Socket[] _sockets = new Socket[4];
        private readonly Task[] _loops = new Task[4];
        private readonly CancellationTokenSource _stop = new();
        private readonly NatMappingBehavior _mapping;
        private readonly NatFilteringBehavior _filtering;
        private readonly int _port;

        public SimulatedNatServer(NatMappingBehavior mapping, NatFilteringBehavior filtering)
        {
            _mapping = mapping;
            _filtering = filtering;
            // Another test process can take a port between FreePorts' check and our bind: pick again then.
            for (var attempt = 1; ; attempt++)
            {
                _port = FreePorts.UdpAndTcpPair();
                if (TryBindAll())
                {
                    break;
                }

                if (attempt == 20)
                {
                    throw new InvalidOperationException("no free loopback UDP port pair after 20 attempts");
                }
            }

            for (var i = 0; i < 4; i++)
            {
                var index = i;
                _loops[i] = Task.Run(() => ServeAsync(index));
            }
        }

        public IPEndPoint Primary => EndPoint(0);

        // Index bit 1: the alternate IP; bit 0: the alternate port.
        private bool TryBindAll()
        {
            for (var i = 0; i < 4; i++)
            {
                _sockets[i]?.Dispose();
                _sockets[i] = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                try
                {
                    _sockets[i].Bind(EndPoint(i));
                }
                catch (SocketException)
                {
                    return false;
                }
            }

            return true;
        }

        /// <summary>While true, CHANGE-REQUEST tests go unanswered (as a slow path would leave them).</summary>
        public volatile bool HoldChangeRequests;

        private int _changeRequestsAnswered;

        public int ChangeRequestsAnswered => Volatile.Read(ref _changeRequestsAnswered);

        private IPEndPoint EndPoint(int index) => new((index & 2) != 0 ? Alternate : IPAddress.Loopback, _port + (index & 1));

        private async Task ServeAsync(int index)
        {
            var buffer = new byte[2048];
            try
            {
                while (true)
                {
                    var received = await _sockets[index].ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), _stop.Token);
                    var answer = Answer(buffer.AsSpan(0, received.ReceivedBytes), index, out var from);
                    if (answer is not null)
                    {
                        await _sockets[from].SendToAsync(answer, SocketFlags.None, received.RemoteEndPoint, _stop.Token);
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        private byte[]? Answer(ReadOnlySpan<byte> request, int index, out int from)
        {
            from = index;
            if (StunMessageReader.TryParse(request, StunReaderLimits.Default, out var message, out _) != OperationStatus.Done)
            {
                return null;
            }

            var changeIp = false;
            var changePort = false;
            if (message.TryGetAttribute(StunAttributeType.ChangeRequest, out var flags))
            {
                StunAttributeReader.TryReadChangeRequest(flags, out changeIp, out changePort);
            }

            // The NAT's filter: what it would drop never reaches the client.
            var dropped = _filtering switch
            {
                NatFilteringBehavior.AddressDependent => changeIp,
                NatFilteringBehavior.AddressAndPortDependent => changeIp || changePort,
                _ => false,
            };
            if (dropped || ((changeIp || changePort) && HoldChangeRequests))
            {
                return null;
            }

            if (changeIp || changePort)
            {
                Interlocked.Increment(ref _changeRequestsAnswered);
            }

            from = index ^ (changeIp ? 2 : 0) ^ (changePort ? 1 : 0);

            // The NAT's mapping, as the server sees it: one public port per destination the NAT tells apart.
            var port = 40000 + _mapping switch
            {
                NatMappingBehavior.AddressDependent => index >> 1,
                NatMappingBehavior.AddressAndPortDependent => index,
                _ => 0,
            };
            var buffer = new byte[256];
            var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), message.Header.TransactionId);
            writer.WriteXorAddress(StunAttributeType.XorMappedAddress, StunAddress.FromEndPoint(new IPEndPoint(PublicAddress, port)));
            writer.WriteAddress(StunAttributeType.ResponseOrigin, StunAddress.FromEndPoint(EndPoint(from)));
            writer.WriteAddress(StunAttributeType.OtherAddress, StunAddress.FromEndPoint(EndPoint(3)));
            writer.WriteFingerprint();
            return writer.Written.ToArray();
        }

        public void Dispose()
        {
            _stop.Cancel();
            Task.WaitAll(_loops);
            foreach (var socket in _sockets)
            {
                socket.Dispose();
            }

            _stop.Dispose();
        }
    }
}

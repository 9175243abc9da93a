using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;

namespace Relay.Server.Tests;

/// <summary>
/// The allocation budget for the request path above the codec: 0 bytes per request, whatever the
/// outcome. CI fails when it is exceeded.
/// </summary>
public sealed class StunServiceAllocationTests
{
    [Fact]
    public void Handle_AllocatesNothing_ForSuccess_Rfc5780_420_400_AndDrops()
    {
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var options = new StunOptions { AlternateAddress = "127.0.0.2" };
        options.ListenAddresses.Add("127.0.0.1");
        var metrics = new StunMetrics(services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>());
        var service = new StunBindingService(Options.Create(options), metrics, NullLogger<StunBindingService>.Instance);
        var limiter = new SourceRateLimiter(1_000_000_000, 1_000_000_000, 1024);

        var success = StunTestClient.Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WriteAttribute(StunAttributeType.Software, "client"u8));
        var change = StunTestClient.Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WriteChangeRequest(true, true));
        var unknown = StunTestClient.Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WriteAttribute(0x7ABC, "?"u8));
        var malformed = StunTestClient.Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WriteAttribute(StunAttributeType.Userhash, new byte[3]), fingerprint: false);
        var classic = StunTestClient.ClassicRequest(StunTransactionId.NewRandom(), 42);
        var garbage = "GET / HTTP/1.1\r\n\r\n"u8.ToArray();
        var requests = new[] { success, change, unknown, malformed, classic, garbage };

        var context = new StunRequestContext(
            StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Parse("198.51.100.7"), 40000)),
            StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Loopback, 3478)),
            StunTransport.Udp);
        var response = new byte[service.ResponseBufferSize];

        void RunAll()
        {
            foreach (var request in requests)
            {
                limiter.TryAcquire(context.Client);
                service.Handle(request, context, response);
            }
        }

        for (var i = 0; i < 1000; i++)
        {
            RunAll();
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 10_000; i++)
        {
            RunAll();
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

        // Each request really took the path it is meant to exercise.
        Assert.Equal(11_000 * 3, metrics.Responses(StunTransport.Udp, 200));
        Assert.Equal(11_000, metrics.Responses(StunTransport.Udp, 420));
        Assert.Equal(11_000, metrics.Responses(StunTransport.Udp, 400));
        Assert.Equal(11_000, metrics.Drops(StunTransport.Udp, StunDropReason.NotStun));
    }
}

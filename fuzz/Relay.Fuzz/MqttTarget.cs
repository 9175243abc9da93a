using System.IO.Pipelines;
using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.InMemory;

namespace Relay.Fuzz;

/// <summary>
/// <c>mqtt</c>: the MQTT connection engine (<see cref="MqttConnection"/>, the broker's sessions, routing,
/// retained messages and topic trees behind it) fed one input as the byte stream of one TCP connection, over
/// in-memory pipes, on a broker that holds nothing from earlier inputs (a container on in-memory stores, a
/// frozen clock), so an input means the same paths every time it runs. Building that broker costs about five
/// times the average input, so it is kept for the next input while it holds no session and no retained
/// message (what most inputs leave), and built afresh after an input that left either. Anyone is let in (a
/// permissive authenticator, lab-mode ACL), so the fuzzer reaches everything after CONNECT.
/// <para>Findings: an exception out of the engine, an error the server logged, a connection that does not
/// end once its input has (a hang: the stream is finite), or a connection left registered.</para>
/// </summary>
internal sealed class MqttTarget : IFuzzTarget
{
    // A finite stream must end the connection long before this; more is a hang, whatever the machine's load.
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private static readonly IPEndPoint Client = new(IPAddress.Loopback, 50000);
    private readonly string _dataDirectory = Directory.CreateTempSubdirectory("relay-fuzz-mqtt-").FullName;
    private readonly FaultLog _faults = new();
    private readonly ServiceCollection _services = new();
    private ServiceProvider? _broker;

    public MqttTarget()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Relay:DataDirectory"] = _dataDirectory,
            ["Relay:Mqtt:AllowAnonymous"] = "true",
            ["Relay:Mqtt:SysIntervalSeconds"] = "0",
        }).Build();
        _services.AddSingleton<IConfiguration>(configuration);
        _services.AddLogging(logging => logging.ClearProviders().AddProvider(_faults).SetMinimumLevel(LogLevel.Error));
        _services.AddMetrics();
        _services.AddRelayMqtt(configuration);

        // After AddRelayMqtt: the last registration of an interface wins.
        _services.AddSingleton<TimeProvider>(new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero)));
        _services.AddSingleton<IMqttSessionStore, InMemorySessionStore>();
        _services.AddSingleton<IMqttRetainedStore, InMemoryRetainedStore>();
        _services.AddSingleton<IMqttAuthenticator, AllowEveryone>();
        _services.AddSingleton<IHostApplicationLifetime, Lifetime>();
    }

    public void Execute(ReadOnlySpan<byte> input)
    {
        var run = RunAsync(input.ToArray());
        if (!run.Wait(Deadline))
        {
            throw new FuzzFinding($"mqtt: the connection did not end within {Deadline.TotalSeconds} s of its input ending");
        }

        run.GetAwaiter().GetResult();
        _faults.ThrowIfAny("mqtt");
    }

    private async Task RunAsync(byte[] input)
    {
        if (_broker is null)
        {
            var built = _services.BuildServiceProvider();
            await built.GetRequiredService<MqttBrokerService>().StartAsync(CancellationToken.None);
            _broker = built;
        }

        var provider = _broker;
        var keep = false;
        try
        {
            var services = provider.GetRequiredService<MqttConnectionServices>();

            // Small segments: packets straddle segment boundaries, the readers' slow paths run too.
            var toServer = new Pipe(new PipeOptions(minimumSegmentSize: 32, pauseWriterThreshold: 0, useSynchronizationContext: false));
            var fromServer = new Pipe(new PipeOptions(useSynchronizationContext: false));
            await toServer.Writer.WriteAsync(input);
            await toServer.Writer.CompleteAsync();
            var drain = DrainAsync(fromServer.Reader);
            var connection = new MqttConnection(services, new DuplexPipe(toServer.Reader, fromServer.Writer), MqttTransport.Tcp, Client, null, provider.GetRequiredService<ILogger<MqttConnection>>());
            await connection.RunAsync();
            await fromServer.Writer.CompleteAsync();
            await drain;
            if (!connection.Ended.IsCompleted)
            {
                throw new FuzzFinding("mqtt: RunAsync returned before the connection let go of its session");
            }

            if (connection.ClientId is { } clientId && services.Devices.IsOnline(clientId))
            {
                throw new FuzzFinding($"mqtt: client '{clientId}' is still online after its only connection ended");
            }

            keep = services.Sessions.Count == 0 && provider.GetRequiredService<MqttRetainedMessages>().Count == 0;
        }
        finally
        {
            if (!keep)
            {
                _broker = null;
                await provider.GetRequiredService<MqttBrokerService>().StopAsync(CancellationToken.None);
                await provider.DisposeAsync();
            }
        }
    }

    private static async Task DrainAsync(PipeReader reader)
    {
        while (true)
        {
            var result = await reader.ReadAsync();
            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                await reader.CompleteAsync();
                return;
            }
        }
    }

    public void Dispose()
    {
        if (_broker is { } broker)
        {
            _broker = null;
            broker.GetRequiredService<MqttBrokerService>().StopAsync(CancellationToken.None).GetAwaiter().GetResult();
            broker.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }

        try
        {
            Directory.Delete(_dataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }

    /// <summary>Lab mode: every CONNECT is an anonymous client, which the ACL lets publish and subscribe anywhere.</summary>
    private sealed class AllowEveryone : IMqttAuthenticator
    {
        private static readonly MqttIdentity Anonymous = new(MqttPrincipalKind.Anonymous, string.Empty, []);

        public ValueTask<MqttAuthResult> AuthenticateAsync(MqttAuthRequest request, CancellationToken cancellationToken) =>
            ValueTask.FromResult(MqttAuthResult.Allowed(Anonymous));
    }

    private sealed class Lifetime : IHostApplicationLifetime
    {
        public CancellationToken ApplicationStarted => CancellationToken.None;

        public CancellationToken ApplicationStopping => CancellationToken.None;

        public CancellationToken ApplicationStopped => CancellationToken.None;

        public void StopApplication()
        {
        }
    }
}

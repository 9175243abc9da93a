using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Relay.Rendezvous.Stun;

namespace Relay.Server.Tests;

/// <summary>
/// The real server, in-process, on free loopback ports. Collects every log entry at Error or above so a
/// test fails when the server logged a fault it should not have.
/// </summary>
internal sealed class RelayTestServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly CollectingLoggerProvider _logs;
    private readonly string _dataDirectory;

    private RelayTestServer(WebApplication app, CollectingLoggerProvider logs, string dataDirectory, int stunPort, int httpPort, int httpsPort, int tlsPort, int mqttPort, int mqttTlsPort)
    {
        HttpsPort = httpsPort;
        MqttPort = mqttPort;
        MqttTlsPort = mqttTlsPort;
        _app = app;
        _logs = logs;
        _dataDirectory = dataDirectory;
        StunPort = stunPort;
        HttpPort = httpPort;
        TlsPort = tlsPort;
    }

    public int StunPort { get; }

    public int HttpPort { get; }

    public int TlsPort { get; }

    /// <summary><c>Relay:Http:TlsPort</c>: a free port (served only with a certificate).</summary>
    public int HttpsPort { get; }

    /// <summary><c>Relay:Mqtt:Port</c>: a free port unless the test set one.</summary>
    public int MqttPort { get; }

    /// <summary><c>Relay:Mqtt:TlsPort</c>: a free port unless the test set one (served only with a certificate).</summary>
    public int MqttTlsPort { get; }

    public string DataDirectory => _dataDirectory;

    public IServiceProvider Services => _app.Services;

    public StunMetrics Metrics => _app.Services.GetRequiredService<StunMetrics>();

    /// <summary>When true, errors in the log are expected (the test provokes them) and not a failure.</summary>
    public bool AllowErrors { get; set; }

    public static Task<RelayTestServer> StartAsync(params string[] settings) => StartAsync(configure: null, settings);

    /// <summary>
    /// Starts the server with <paramref name="configure"/> applied to its services after the server's own
    /// registrations, so a test can replace one (e.g. <c>services.AddSingleton&lt;TimeProvider&gt;(fake)</c>:
    /// the last registration wins). RelayHost.Build runs its <c>configure</c> callback before it registers
    /// anything, so the callback installs a service provider factory that applies the replacements when
    /// the host builds its container.
    /// </summary>
    public static async Task<RelayTestServer> StartAsync(Action<IServiceCollection>? configure, params string[] settings)
    {
        var stunPort = settings.Any(static s => s.StartsWith("Relay:Stun:Port=", StringComparison.Ordinal))
            ? int.Parse(settings.First(static s => s.StartsWith("Relay:Stun:Port=", StringComparison.Ordinal)).Split('=')[1])
            : FreePorts.UdpAndTcpPair();
        var httpPort = FreePorts.Tcp();
        var httpsPort = FreePorts.Tcp();
        var tlsPort = FreePorts.Tcp();
        var mqttPort = Setting(settings, "Relay:Mqtt:Port") ?? FreePorts.Tcp();
        var mqttTlsPort = Setting(settings, "Relay:Mqtt:TlsPort") ?? FreePorts.Tcp();
        var dataDirectory = Directory.CreateTempSubdirectory("relay-test-").FullName;
        var args = new List<string>
        {
            $"--Relay:DataDirectory={dataDirectory}",
            $"--Relay:Stun:Port={stunPort}",
            $"--Relay:Stun:TlsPort={tlsPort}",
            $"--Relay:Http:Port={httpPort}",
            $"--Relay:Http:TlsPort={httpsPort}",
            "--Relay:Http:ListenAddresses:0=127.0.0.1",
            "--Relay:Stun:UdpReceiveLoops=2",
            $"--Relay:Mqtt:Port={mqttPort}",
            $"--Relay:Mqtt:TlsPort={mqttTlsPort}",
        };
        if (!settings.Any(static s => s.StartsWith("Relay:Mqtt:ListenAddresses", StringComparison.Ordinal)))
        {
            args.Add("--Relay:Mqtt:ListenAddresses:0=127.0.0.1");
        }

        if (!settings.Any(static s => s.StartsWith("Relay:Turn:RelayPort", StringComparison.Ordinal)))
        {
            // Relay ports above both FreePorts' range (20000-59999) and the kernel's ephemeral range
            // (32768-60999), so an allocation in one test never takes the port another test just chose.
            args.Add("--Relay:Turn:RelayPortMin=61000");
            args.Add("--Relay:Turn:RelayPortMax=65535");
        }

        if (!settings.Any(static s => s.StartsWith("Relay:Stun:ListenAddresses", StringComparison.Ordinal)))
        {
            args.Add("--Relay:Stun:ListenAddresses:0=127.0.0.1");
            args.Add("--Relay:Stun:ListenAddresses:1=::1");
        }

        args.AddRange(settings.Where(static s => !s.StartsWith("Relay:Stun:Port=", StringComparison.Ordinal) && !s.StartsWith("Relay:Mqtt:Port=", StringComparison.Ordinal) && !s.StartsWith("Relay:Mqtt:TlsPort=", StringComparison.Ordinal)).Select(static s => "--" + s));
        var logs = new CollectingLoggerProvider();
        var app = RelayHost.Build([.. args], builder =>
        {
            builder.Logging.AddProvider(logs);
            if (configure is not null)
            {
                builder.Host.UseServiceProviderFactory(new OverridingServiceProviderFactory(configure));
            }
        });
        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }

        return new RelayTestServer(app, logs, dataDirectory, stunPort, httpPort, httpsPort, tlsPort, mqttPort, mqttTlsPort);
    }

    private static int? Setting(string[] settings, string key)
    {
        var prefix = key + "=";
        var setting = settings.FirstOrDefault(s => s.StartsWith(prefix, StringComparison.Ordinal));
        return setting is null ? null : int.Parse(setting[prefix.Length..], System.Globalization.CultureInfo.InvariantCulture);
    }

    public async ValueTask DisposeAsync()
    {
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            await _app.StopAsync(stop.Token);
        }

        await _app.DisposeAsync();
        try
        {
            Directory.Delete(_dataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }

        if (!AllowErrors)
        {
            var errors = _logs.Errors.ToArray();
            Assert.True(errors.Length == 0, "The server logged errors:\n" + string.Join("\n", errors));
        }
    }
}

/// <summary>Applies a test's service replacements to the finished service collection, then builds it as usual.</summary>
internal sealed class OverridingServiceProviderFactory(Action<IServiceCollection> configure) : IServiceProviderFactory<IServiceCollection>
{
    private readonly DefaultServiceProviderFactory _inner = new();

    public IServiceCollection CreateBuilder(IServiceCollection services)
    {
        configure(services);
        return _inner.CreateBuilder(services);
    }

    public IServiceProvider CreateServiceProvider(IServiceCollection containerBuilder) => _inner.CreateServiceProvider(containerBuilder);
}

internal static class FreePorts
{
    // Every port a test listens on comes from one counter below the kernel's ephemeral range (32768-60999):
    // a port the kernel chose for "port 0" could meanwhile become some client connection's source port, and
    // two pickers drawing from different pools could hand out the same port twice.
    private const int First = 20000;
    private const int Count = 12000;
    private static int s_next = Environment.ProcessId % 500 * 20;

    /// <summary>A port free for both UDP and TCP on every loopback address we use, so STUN can take both.</summary>
    public static int UdpAndTcpPair()
    {
        while (true)
        {
            var port = Next();
            if (IsFree(port, SocketType.Dgram) && IsFree(port, SocketType.Stream)
                && IsFree(port + 1, SocketType.Dgram) && IsFree(port + 1, SocketType.Stream))
            {
                // The pair's second port (RFC 5780's alternate) is skipped too.
                Interlocked.Increment(ref s_next);
                return port;
            }
        }
    }

    public static int Tcp()
    {
        while (true)
        {
            var port = Next();
            if (IsFree(port, SocketType.Stream))
            {
                return port;
            }
        }
    }

    private static int Next() => ((Interlocked.Increment(ref s_next) & int.MaxValue) % Count) + First;

    private static bool IsFree(int port, SocketType type)
    {
        try
        {
            using var v4 = new Socket(AddressFamily.InterNetwork, type, type == SocketType.Dgram ? ProtocolType.Udp : ProtocolType.Tcp);
            v4.Bind(new IPEndPoint(IPAddress.Any, port));
            using var v6 = new Socket(AddressFamily.InterNetworkV6, type, type == SocketType.Dgram ? ProtocolType.Udp : ProtocolType.Tcp);
            v6.Bind(new IPEndPoint(IPAddress.IPv6Any, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}

internal sealed class CollectingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<string> Errors { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Collector(categoryName, Errors);

    public void Dispose()
    {
    }

    private sealed class Collector(string category, ConcurrentQueue<string> errors) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error)
            {
                errors.Enqueue($"{category}: {formatter(state, exception)} {exception}");
            }
        }
    }
}

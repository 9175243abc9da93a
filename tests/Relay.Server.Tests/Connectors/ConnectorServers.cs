using System.Globalization;
using System.Net;

namespace Relay.Server.Tests.Connectors;

/// <summary>
/// A real PostgreSQL from Debian's <c>postgresql</c> package in a temporary cluster of its own (initdb, trust
/// authentication on loopback), on a free port with its socket in the cluster's directory. As root it runs as
/// the <c>postgres</c> user (PostgreSQL refuses root). One per test class (<see cref="IClassFixture{T}"/>);
/// <see cref="StopAsync"/> and <see cref="StartAsync"/> take it down and bring it back on the same port with
/// the same data. test.sh installs the package; a missing one fails the test.
/// </summary>
public sealed class PostgresServer : IAsyncLifetime
{
    private const string User = "postgres";
    private readonly string _root = Directory.CreateTempSubdirectory("relay-pg-").FullName;
    private ToolProcess? _server;

    public int Port { get; } = FreePorts.Tcp();

    public string ConnectionString => $"Host=127.0.0.1;Port={Port};Username={User};Database=postgres;Timeout=5";

    private string DataDirectory => Path.Combine(_root, "data");

    private static bool IsRoot => Environment.UserName == "root";

    private static string Bin(string program)
    {
        var bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(static d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, program))).Order(StringComparer.Ordinal).LastOrDefault()
            : null;
        Assert.True(bin is not null, $"{program} is missing: ./test.sh installs postgresql (apt-get install postgresql)");
        return Path.Combine(bin!, program);
    }

    public async Task InitializeAsync()
    {
        if (IsRoot)
        {
            await RunAsync("chown", [User + ":" + User, _root]);
        }

        await RunAsync(Bin("initdb"), ["-D", DataDirectory, "-U", User, "-A", "trust", "--no-sync", "-E", "UTF8"], asPostgres: true);
        await StartAsync();
    }

    /// <summary>Starts the server (again) on <see cref="Port"/>; returns once it accepts connections.</summary>
    public async Task StartAsync()
    {
        Assert.Null(_server);
        string[] arguments =
        [
            Bin("postgres"), "-D", DataDirectory, "-p", Port.ToString(CultureInfo.InvariantCulture), "-k", _root,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=40",
        ];
        _server = IsRoot
            ? ToolProcess.Start("setpriv", ["--reuid=" + User, "--regid=" + User, "--init-groups", "--", .. arguments], TimeSpan.FromMinutes(20))
            : ToolProcess.Start(arguments[0], arguments[1..], TimeSpan.FromMinutes(20));
        await _server.WaitForListenerAsync(new IPEndPoint(IPAddress.Loopback, Port), "postgres");

        // Listening comes before recovery ends ("the database system is starting up"): ready is a query answered.
        var server = _server;
        await Poll.UntilAsync(
            async () =>
            {
                try
                {
                    await using var connection = new Npgsql.NpgsqlConnection(ConnectionString + ";Pooling=false");
                    await connection.OpenAsync();
                    await using var query = new Npgsql.NpgsqlCommand("SELECT 1", connection);
                    return await query.ExecuteScalarAsync() is 1;
                }
                catch (Npgsql.NpgsqlException)
                {
                    return false;
                }
            },
            "postgres to answer a query",
            TimeSpan.FromSeconds(60),
            TimeSpan.FromMilliseconds(50),
            () => Task.FromResult(server.Transcript));
    }

    /// <summary>Stops the server (fast shutdown: clients are disconnected) and waits for it to exit.</summary>
    public async Task StopAsync()
    {
        Assert.NotNull(_server);
        await RunAsync(Bin("pg_ctl"), ["-D", DataDirectory, "-m", "fast", "-w", "stop"], asPostgres: true);
        await _server.WaitForExitAsync("postgres after pg_ctl stop");
        await _server.DisposeAsync();
        _server = null;
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await StopAsync();
        }

        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static async Task RunAsync(string program, string[] arguments, bool asPostgres = false)
    {
        await using var process = asPostgres && IsRoot
            ? ToolProcess.Start("setpriv", ["--reuid=" + User, "--regid=" + User, "--init-groups", "--", program, .. arguments], TimeSpan.FromMinutes(2))
            : ToolProcess.Start(program, arguments, TimeSpan.FromMinutes(2));
        var exit = await process.WaitForExitAsync(program);
        Assert.True(exit == 0, $"{program} exited {exit}\n{process.Transcript}");
    }
}

/// <summary>
/// A real <c>redis-server</c> from Debian's package on a free loopback port, in the foreground, persisting
/// nothing. One per test class; <see cref="StopAsync"/> and <see cref="StartAsync"/> take it down and bring
/// it back (empty) on the same port.
/// </summary>
public sealed class RedisServer : IAsyncLifetime
{
    private readonly string _root = Directory.CreateTempSubdirectory("relay-redis-").FullName;
    private ToolProcess? _server;

    public int Port { get; } = FreePorts.Tcp();

    public string Configuration => $"127.0.0.1:{Port}";

    public Task InitializeAsync() => StartAsync();

    public async Task StartAsync()
    {
        Assert.Null(_server);
        _server = ToolProcess.Start(
            "redis-server",
            ["--port", Port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", string.Empty, "--appendonly", "no", "--daemonize", "no", "--dir", _root],
            TimeSpan.FromMinutes(20));
        await _server.WaitForListenerAsync(new IPEndPoint(IPAddress.Loopback, Port), "redis-server");
    }

    public async Task StopAsync()
    {
        Assert.NotNull(_server);
        await _server.DisposeAsync();
        _server = null;
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await StopAsync();
        }

        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

using System.Net;

namespace Relay.Server.Tests.Mqtt.Interop;

public enum MqttVersion
{
    V311,
    V5,
}

/// <summary>Starts a fresh broker of one kind; the test classes are generic over it.</summary>
public interface IMqttBrokerStarter<TSelf>
    where TSelf : MqttBroker
{
    static abstract Task<TSelf> StartAsync();
}

/// <summary>
/// A broker under test, out of process on free loopback ports, with the policy every interop test
/// assumes: devices <c>d1</c> and <c>d2</c> may only use <c>devices/{id}/#</c>, the service account
/// <c>svc</c> may use <c>devices/#</c>, anonymous clients are refused, sessions persist in a data
/// directory. Where two standard answers are allowed, each broker states the one it gives.
/// </summary>
public abstract class MqttBroker : IAsyncDisposable
{
    public const string Host = "127.0.0.1";

    private static readonly Dictionary<string, string> Secrets = new(StringComparer.Ordinal)
    {
        ["d1"] = "d1-secret-7f3a",
        ["d2"] = "d2-secret-91c4",
        ["svc"] = "svc-password-2b8e",
    };

    protected MqttBroker(string workDirectory, TestPki pki)
    {
        WorkDirectory = workDirectory;
        Pki = pki;
    }

    public abstract string Name { get; }

    public string WorkDirectory { get; }

    public TestPki Pki { get; }

    public string CaPath => Pki.CaPath;

    public int TcpPort { get; protected init; }

    public int TlsPort { get; protected init; }

    public int WebSocketPort { get; protected init; }

    public string WebSocketPath => "/mqtt";

    protected static IReadOnlyDictionary<string, string> Users => Secrets;

    /// <summary>Recent broker output, for assertion messages.</summary>
    public abstract string Log { get; }

    public static string Secret(string user) => Secrets[user];

    public int Port(string transport) => transport switch
    {
        "tcp" => TcpPort,
        "tls" => TlsPort,
        "ws" => WebSocketPort,
        _ => throw new ArgumentOutOfRangeException(nameof(transport), transport, null),
    };

    /// <summary>
    /// CONNACK code for a wrong password. MQTT 3.1.1 §3.2.2.3 allows 0x04 (bad user name or password) or
    /// 0x05 (not authorized); MQTT 5.0 §3.2.2.2 allows 0x86 or 0x87.
    /// </summary>
    public abstract int BadPasswordCode(MqttVersion version);

    /// <summary>
    /// SUBACK code for a filter the ACL denies: MQTT 3.1.1 §3.9.3 0x80 (failure), MQTT 5.0 §3.9.3 0x87
    /// (not authorized), or a grant for a broker that filters at delivery instead.
    /// </summary>
    public abstract int DeniedSubscriptionCode(MqttVersion version, int requestedQos);

    /// <summary>SIGKILL: no shutdown hook runs, nothing is flushed.</summary>
    public abstract Task KillAsync();

    /// <summary>Starts the broker again on the same ports and data directory.</summary>
    public abstract Task RestartAsync();

    public abstract ValueTask DisposeAsync();

    /// <summary>Waits until the broker accepts connections on <paramref name="port"/> (127.0.0.1).</summary>
    protected static Task WaitForListenerAsync(int port, ToolProcess process, string what) =>
        process.WaitForListenerAsync(new IPEndPoint(IPAddress.Loopback, port), what);

    protected static void DeleteQuietly(string directory)
    {
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

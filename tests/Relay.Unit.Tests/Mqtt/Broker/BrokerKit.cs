using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.InMemory;

namespace Relay.Server.Tests.Mqtt.Broker;

/// <summary>
/// The broker's owners of state wired as the server wires them, over in-memory stores and a fake clock:
/// sessions, routing and retained messages driven without sockets, hosts or sleeps.
/// </summary>
internal sealed class BrokerKit
{
    public static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public BrokerKit(MqttOptions? options = null, IMqttAuthorizer? authorizer = null)
    {
        Options = options ?? new MqttOptions();
        StoreWriter = new MqttStoreWriter(Store, NullLogger<MqttStoreWriter>.Instance);
        Context = new MqttSessionContext(Options, Metrics, Index, StoreWriter, Time, NullLogger<MqttSession>.Instance);
        TopicLimits = new MqttTopicLimits(Options, Metrics, NullLogger.Instance, Time);
        Retained = new MqttRetainedMessages(Options, Metrics, TopicLimits, RetainedStore, Time, NullLogger<MqttRetainedMessages>.Instance);
        Router = new MqttRouter(Index, Retained, Store, Options, Metrics, NullLogger<MqttRouter>.Instance);
        Sessions = new MqttSessionRegistry(Context, Router, Store, authorizer ?? new AllowAll(), TopicLimits, Metrics, Time, NullLogger<MqttSessionRegistry>.Instance);
    }

    public MqttOptions Options { get; }

    public FakeTimeProvider Time { get; } = new(Start);

    public MqttMetrics Metrics { get; } = new(TestMeters.NewFactory());

    public InMemorySessionStore Store { get; } = new();

    public InMemoryRetainedStore RetainedStore { get; } = new();

    public MqttSubscriptionTree Index { get; } = new();

    public MqttStoreWriter StoreWriter { get; }

    public MqttSessionContext Context { get; }

    public MqttTopicLimits TopicLimits { get; }

    public MqttRetainedMessages Retained { get; }

    public MqttRouter Router { get; }

    public MqttSessionRegistry Sessions { get; }

    /// <summary>A session for tests that only need one to hang subscriptions on (the trees).</summary>
    public static MqttSession Session(string clientId) => new(clientId, new BrokerKit().Context);

    public static MqttIdentity Device(string id) => new(MqttPrincipalKind.Device, id, []);

    public static MqttIdentity Service(string name) => new(MqttPrincipalKind.Service, name, []);

    public static StoredMessage Message(string topic, byte qos = 1, bool retain = false, string payload = "x", DateTimeOffset? expiresAt = null) =>
        new(topic, System.Text.Encoding.UTF8.GetBytes(payload), qos, retain, expiresAt, null);

    public static PersistedSubscription Subscription(string filter, byte qos = 1, bool noLocal = false, uint id = 0) => new(filter, qos, noLocal, false, 0, id);

    /// <summary>Attaches <paramref name="connection"/> as the device <paramref name="clientId"/> and resumes it, as a CONNECT does.</summary>
    public async Task<MqttSession> ConnectAsync(FakeSessionConnection connection, string clientId, uint expirySeconds = 0, bool cleanStart = false, MqttIdentity? identity = null)
    {
        var (session, _) = await Sessions.AttachAsync(connection, clientId, identity ?? Device(clientId), cleanStart, expirySeconds, CancellationToken.None);
        Assert.NotNull(session);
        session.Resume(connection);
        return session;
    }

    /// <summary>Writes every deferred store operation queued so far (the writer then stops).</summary>
    public async Task FlushStoreWritesAsync()
    {
        StoreWriter.Complete();
        await StoreWriter.RunAsync();
    }

    public async Task<PersistedSession?> StoredAsync(string clientId) =>
        (await Store.LoadAllAsync(CancellationToken.None)).SingleOrDefault(s => s.ClientId == clientId);

    private sealed class AllowAll : IMqttAuthorizer
    {
        public bool CanPublish(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic) => true;

        public bool CanSubscribe(MqttIdentity identity, string clientId, ReadOnlySpan<char> topicFilter) => true;
    }
}

/// <summary>A connection as a session sees it, recording what the session sent to it.</summary>
internal sealed class FakeSessionConnection : IMqttSessionConnection
{
    public int SendWindow { get; set; } = 32;

    public bool IsClosing { get; set; }

    /// <summary>What <see cref="SendPublish"/> answers (a connection that drops, or is closing).</summary>
    public MqttSendResult Result { get; set; } = MqttSendResult.Sent;

    public List<(MqttOutgoing Outgoing, bool Dup)> Published { get; } = [];

    public List<ushort> PubRels { get; } = [];

    public int TakeOvers { get; private set; }

    public MqttEndReason? EndRequested { get; private set; }

    public IPEndPoint? RemoteEndPoint { get; } = new(IPAddress.Loopback, 50000);

    public IPEndPoint? LocalEndPoint { get; } = new(IPAddress.Loopback, 1883);

    public byte ProtocolVersion => 5;

    public DateTimeOffset ConnectedAt => BrokerKit.Start;

    /// <summary>Never completes on its own: the test detaches the connection itself.</summary>
    public Task Ended { get; } = new TaskCompletionSource().Task;

    public IEnumerable<string> Topics => Published.Select(static p => p.Outgoing.Message.Topic);

    public MqttSendResult SendPublish(MqttOutgoing outgoing, bool dup)
    {
        if (Result == MqttSendResult.Sent)
        {
            Published.Add((outgoing, dup));
        }

        return Result;
    }

    public void SendPubRel(ushort packetId) => PubRels.Add(packetId);

    public void TakeOver() => TakeOvers++;

    public bool RequestEnd(MqttEndReason reason, MqttReasonCode code)
    {
        if (EndRequested is not null)
        {
            return false;
        }

        EndRequested = reason;
        return true;
    }
}

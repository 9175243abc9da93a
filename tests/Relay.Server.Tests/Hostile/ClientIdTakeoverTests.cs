using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.InMemory;
using Relay.Protocol.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's H1: a service account whose grants cover only <c>telemetry/#</c> connected with a
/// device's client id and a persistent session, received the device's pending command and acknowledged it
/// (so the command read "delivered"), and kicked the device off. A client id now belongs to its owner.
/// </summary>
public sealed class ClientIdTakeoverTests
{
    private const string TelemetryPassword = "telemetry-password-1";

    private static readonly string[] TelemetryAccount =
    [
        "Relay:Mqtt:ServiceAccounts:0:Name=telemetry",
        $"Relay:Mqtt:ServiceAccounts:0:Password={TelemetryPassword}",
        "Relay:Mqtt:ServiceAccounts:0:Grants:0=telemetry/#",
        "Relay:Mqtt:ServiceAccounts:1:Name=other",
        $"Relay:Mqtt:ServiceAccounts:1:Password={TelemetryPassword}",
        "Relay:Mqtt:ServiceAccounts:1:Grants:0=telemetry/#",
    ];

    private static Action<MqttConnectOptionsBuilder> Persistent(string user, string password) => o =>
    {
        o.Options.Username = user;
        o.Options.Password = Encoding.UTF8.GetBytes(password);
        o.Options.HasPassword = true;
        o.Options.CleanStart = false;
        o.Options.SessionExpiryInterval = o.Options.Version == MqttProtocolVersion.V500 ? 3600 : null;
    };

    [Theory]
    [InlineData(MqttProtocolVersion.V500, 0x87)]
    [InlineData(MqttProtocolVersion.V311, 0x05)]
    public async Task ServiceAccount_WithADevicesClientId_IsRefused_NeverGetsItsCommand_AndNeverKicksIt(MqttProtocolVersion version, byte refusal)
    {
        await using var kit = await PushTestKit.StartAsync(TelemetryAccount);

        // The device makes its persistent session and its command subscription, then goes away.
        var (device, _) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", version, Persistent("d1", PushTestKit.Secret));
        Assert.Equal([1], await device.SubscribeAndWaitAsync("devices/d1/commands", 1));
        await device.DisconnectAsync();
        await device.ReadUntilClosedAsync();
        await device.DisposeAsync();

        var id = await PushTestKit.PushAsync(kit.Http, "d1", "open-door");

        // The attack: the telemetry account asks for the device's session.
        var (attacker, connAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", version, Persistent("telemetry", TelemetryPassword), expectSuccess: false);
        await using (attacker)
        {
            Assert.Equal(refusal, connAck.ConnAck().ReasonCode);
            Assert.False(connAck.ConnAck().SessionPresent);
            Assert.Empty(await attacker.ReadUntilClosedAsync());
        }

        Assert.Equal("queued", (await PushTestKit.GetAsync(kit.Http, id)).GetProperty("state").GetString());

        // The device comes back and gets its command, once.
        var (back, backAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", version, Persistent("d1", PushTestKit.Secret));
        await using var b = back;
        Assert.True(backAck.ConnAck().SessionPresent);
        var command = (await back.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.Contains("open-door", Encoding.UTF8.GetString(command.Payload), StringComparison.Ordinal);
        await back.AckAsync(MqttPacketType.PubAck, command.PacketId);
        await kit.Sink.WaitAsync(id, Relay.Server.Push.CommandState.Delivered);

        // While the device is online the attack neither connects nor disconnects it.
        var (again, againAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", version, Persistent("telemetry", TelemetryPassword), expectSuccess: false);
        await using (again)
        {
            Assert.Equal(refusal, againAck.ConnAck().ReasonCode);
        }

        Assert.Empty(await back.DrainUntilPingAsync());
        Assert.True(kit.Server.Services.GetRequiredService<IMqttDeviceChannel>().IsDeviceSession("d1"));
    }

    [Fact]
    public async Task AnonymousClient_WithADevicesClientId_IsRefused()
    {
        await using var kit = await PushTestKit.StartAsync("Relay:Mqtt:AllowAnonymous=true");
        var (attacker, connAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d2", MqttProtocolVersion.V500, expectSuccess: false);
        await using var a = attacker;
        Assert.Equal((byte)MqttReasonCode.NotAuthorized, connAck.ConnAck().ReasonCode);

        // An anonymous client with an id of its own is still welcome in the lab.
        var (lab, _) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "lab-client", MqttProtocolVersion.V500);
        await lab.DisposeAsync();
    }

    [Fact]
    public async Task ASession_IsResumedAndTakenOver_OnlyByItsOwner()
    {
        await using var kit = await PushTestKit.StartAsync(TelemetryAccount);
        var (first, _) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "backend-1", MqttProtocolVersion.V500, Persistent("telemetry", TelemetryPassword));
        Assert.Equal([1], await first.SubscribeAndWaitAsync("telemetry/#", 1));

        // Another account, same client id: refused, and the owner's connection stays up.
        var (other, otherAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "backend-1", MqttProtocolVersion.V500, Persistent("other", TelemetryPassword), expectSuccess: false);
        await using (other)
        {
            Assert.Equal((byte)MqttReasonCode.NotAuthorized, otherAck.ConnAck().ReasonCode);
        }

        Assert.Empty(await first.DrainUntilPingAsync());

        // The owner itself may take over its own session [MQTT-3.1.4-3] and finds it present.
        var (second, secondAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "backend-1", MqttProtocolVersion.V500, Persistent("telemetry", TelemetryPassword));
        await using var s = second;
        Assert.True(secondAck.ConnAck().SessionPresent);
        Assert.Equal(MqttReasonCode.SessionTakenOver, (await first.ReceiveAsync(MqttPacketType.Disconnect)).Disconnect().ReasonCode);
        await first.DisposeAsync();
        Assert.Equal(1, kit.Server.MqttMetrics().LimitHits(MqttLimit.SessionOwner));
    }

    /// <summary>
    /// A session stored before owners existed is claimed by whoever resumes it, and keeps only the
    /// subscriptions that identity may make itself: <c>devices/#</c> is dropped for the telemetry account.
    /// </summary>
    [Fact]
    public async Task AResumedSession_KeepsOnlyTheSubscriptionsItsNewOwnerMayMake()
    {
        var sessions = new InMemorySessionStore();
        await sessions.UpsertSessionAsync("legacy", 3600, DateTimeOffset.UtcNow, null, CancellationToken.None);
        await sessions.UpsertSubscriptionAsync("legacy", new PersistedSubscription("devices/#", 1, false, false, 0, 0), CancellationToken.None);
        await sessions.UpsertSubscriptionAsync("legacy", new PersistedSubscription("telemetry/#", 1, false, false, 0, 0), CancellationToken.None);
        await using var server = await RelayTestServer.StartAsync(
            services => services.AddSingleton<IMqttSessionStore>(sessions),
            [.. TelemetryAccount, "Relay:Mqtt:AllowAnonymous=false"]);

        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "legacy", MqttProtocolVersion.V500, Persistent("telemetry", TelemetryPassword));
        await using var c = client;
        Assert.True(connAck.ConnAck().SessionPresent);
        var state = server.Services.GetRequiredService<MqttSessionRegistry>().Find("legacy");
        Assert.NotNull(state);
        Assert.Equal(["telemetry/#"], state.SnapshotSubscriptions().Select(static s => s.Filter).ToArray());

        var stored = Assert.Single(await sessions.LoadAllAsync(CancellationToken.None), static p => p.ClientId == "legacy");
        Assert.Equal("telemetry/#", Assert.Single(stored.Subscriptions).TopicFilter);
        Assert.Equal("Service:telemetry", stored.Owner);
    }
}

using System.Text;
using Relay.Server.Mqtt;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineConnectTests
{
    [Fact]
    public async Task V5_ConnAck_AnnouncesOurLimits()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxInflight=7", "Relay:Mqtt:TopicAliasMaximum=9", "Relay:Mqtt:MaxPacketSize=5000");
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "c1");
        await using var _ = client;
        var properties = connAck.ConnAck().Properties;
        Assert.Equal((ushort)7, properties.ReceiveMaximum);
        Assert.Equal((ushort)9, properties.TopicAliasMaximum);
        Assert.Equal(5000u, properties.MaximumPacketSize);
        Assert.False(connAck.ConnAck().SessionPresent);
        Assert.Equal(1, server.MqttMetrics().ClientsConnected);
    }

    [Fact]
    public async Task V311_Connect_IsAccepted()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "c1", MqttProtocolVersion.V311);
        await using var _ = client;
        Assert.Equal(0, connAck.ConnAck().ReasonCode);
        Assert.Empty(await client.DrainUntilPingAsync());
    }

    [Fact]
    public async Task FirstPacketNotConnect_ClosesWithoutAnswer_MQTT_3_1_0_1()
    {
        await using var server = await EngineTestServer.StartAsync();
        await using var client = await MqttTestClient.OpenAsync(server.MqttPort);
        await client.PingAsync();
        Assert.Empty(await client.ReadUntilClosedAsync());
    }

    [Fact]
    public async Task SecondConnect_IsProtocolError_V5Disconnect0x82_MQTT_3_1_0_2()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c1");
        await using var __ = client;
        var connect = new MqttConnectOptions { Version = MqttProtocolVersion.V500, ClientId = "c1", CleanStart = true };
        await client.SendAsync(w => MqttPacketWriter.WriteConnect(w, connect));
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.ProtocolError, Assert.Single(packets).Disconnect().ReasonCode);
    }

    [Fact]
    public async Task EmptyClientId_V5_GetsAssignedClientIdentifier_MQTT_3_1_3_6()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, string.Empty);
        await using var _ = client;
        var properties = connAck.ConnAck().Properties;
        Assert.True(properties.HasAssignedClientIdentifier);
        Assert.StartsWith("relay-", Encoding.UTF8.GetString(properties.AssignedClientIdentifier), StringComparison.Ordinal);
    }

    [Fact]
    public async Task EmptyClientId_V311_WithoutCleanSession_IsRejected0x02_MQTT_3_1_3_8()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, string.Empty, MqttProtocolVersion.V311, o => o.Options.CleanStart = false, expectSuccess: false);
        await using var _ = client;
        Assert.Equal((byte)MqttConnectReturnCode.IdentifierRejected, connAck.ConnAck().ReasonCode);
        Assert.Empty(await client.ReadUntilClosedAsync());
    }

    [Fact]
    public async Task EmptyClientId_V311_WithCleanSession_IsAssigned_MQTT_3_1_3_7()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, string.Empty, MqttProtocolVersion.V311);
        await using var _ = client;
        Assert.Equal(0, connAck.ConnAck().ReasonCode);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311, (byte)MqttConnectReturnCode.BadUserNameOrPassword)]
    [InlineData(MqttProtocolVersion.V500, (byte)MqttReasonCode.BadUserNameOrPassword)]
    public async Task WrongDeviceSecret_IsRefused(MqttProtocolVersion version, byte expected)
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:AllowAnonymous=false", "Relay:Mqtt:Devices:0:Id=dev1", "Relay:Mqtt:Devices:0:Secret=s3cret");
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "dev1", version, o =>
        {
            o.Options.Username = "dev1";
            o.Options.Password = "wrong"u8.ToArray();
            o.Options.HasPassword = true;
        }, expectSuccess: false);
        await using var _ = client;
        Assert.Equal(expected, connAck.ConnAck().ReasonCode);
        Assert.Empty(await client.ReadUntilClosedAsync());
        Assert.Equal(1, server.MqttMetrics().AuthOutcomes(MqttAuthOutcome.BadCredentials));
    }

    [Fact]
    public async Task DeviceWithRightSecret_IsAccepted()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:AllowAnonymous=false", "Relay:Mqtt:Devices:0:Id=dev1", "Relay:Mqtt:Devices:0:Secret=s3cret");
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "dev1", MqttProtocolVersion.V500, o =>
        {
            o.Options.Username = "dev1";
            o.Options.Password = "s3cret"u8.ToArray();
            o.Options.HasPassword = true;
        });
        await using var __ = client;
        Assert.Equal(1, server.MqttMetrics().AuthOutcomes(MqttAuthOutcome.Allow));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311, (byte)MqttConnectReturnCode.NotAuthorized)]
    [InlineData(MqttProtocolVersion.V500, (byte)MqttReasonCode.NotAuthorized)]
    public async Task Anonymous_WhenNotAllowed_IsNotAuthorized(MqttProtocolVersion version, byte expected)
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:AllowAnonymous=false");
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "anon", version, expectSuccess: false);
        await using var _ = client;
        Assert.Equal(expected, connAck.ConnAck().ReasonCode);
    }

    [Fact]
    public async Task ConnectWithAuthenticationMethod_GetsBadAuthenticationMethod0x8C()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "c1", MqttProtocolVersion.V500, o => o.Options.AuthenticationMethod = "SCRAM-SHA-1", expectSuccess: false);
        await using var _ = client;
        Assert.Equal((byte)MqttReasonCode.BadAuthenticationMethod, connAck.ConnAck().ReasonCode);
        Assert.Empty(await client.ReadUntilClosedAsync());
    }

    [Fact]
    public async Task AuthPacketWithoutMethod_IsProtocolError0x82()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c1");
        await using var __ = client;
        await client.SendAsync(w => MqttPacketWriter.WriteAuth(w, MqttReasonCode.ReAuthenticate, "x", null));
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.ProtocolError, Assert.Single(packets).Disconnect().ReasonCode);
    }

    [Fact]
    public async Task SameClientId_TakesOver_OldGetsDisconnect0x8E_MQTT_3_1_4_3()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (first, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "same");
        await using var __ = first;
        var (second, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "same");
        await using var ___ = second;
        var packets = await first.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.SessionTakenOver, Assert.Single(packets).Disconnect().ReasonCode);
        Assert.Empty(await second.DrainUntilPingAsync());
    }

    [Fact]
    public async Task SilentClient_IsClosedAfterOneAndAHalfKeepAlives_0x8D_MQTT_3_1_2_24()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sleepy", MqttProtocolVersion.V500, o => o.Options.KeepAliveSeconds = 1);
        await using var __ = client;
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.KeepAliveTimeout, Assert.Single(packets).Disconnect().ReasonCode);

        // Counted once the DISCONNECT is on its way, which the client may see first.
        await Poll.UntilAsync(() => server.MqttMetrics().LimitHits(MqttLimit.KeepAlive) == 1, "the keep-alive limit hit to be counted");
    }

    [Fact]
    public async Task KeepAliveZeroOrAboveMaximum_GetsServerKeepAlive()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxKeepAliveSeconds=30");
        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "c1", MqttProtocolVersion.V500, o => o.Options.KeepAliveSeconds = 0);
        await using var _ = client;
        Assert.Equal((ushort)30, connAck.ConnAck().Properties.ServerKeepAlive);
    }

    [Fact]
    public async Task NoConnectWithinDeadline_Closes()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:ConnectTimeoutSeconds=1");
        await using var client = await MqttTestClient.OpenAsync(server.MqttPort);
        Assert.Empty(await client.ReadUntilClosedAsync());
        Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.ConnectTimeout));
    }

    [Fact]
    public async Task UnsupportedProtocolLevel_GetsConnAck0x01_MQTT_3_1_2_2()
    {
        await using var server = await EngineTestServer.StartAsync();
        await using var client = await MqttTestClient.OpenAsync(server.MqttPort, MqttProtocolVersion.V311);

        // CONNECT, remaining length 12: "MQTT", level 9, flags clean, keep-alive 60, empty client id.
        await client.SendRawAsync(new byte[] { 0x10, 12, 0, 4, (byte)'M', (byte)'Q', (byte)'T', (byte)'T', 9, 0x02, 0, 60, 0, 0 });
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal((byte)MqttConnectReturnCode.UnacceptableProtocolVersion, Assert.Single(packets).Bytes[3]);
    }

    [Fact]
    public async Task ConnectionsPerIpLimit_ClosesTheExtraConnectionBeforeReading()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxConnectionsPerIp=1");
        var (first, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "one");
        await using var __ = first;
        await using var second = await MqttTestClient.OpenAsync(server.MqttPort);
        Assert.Empty(await second.ReadUntilClosedAsync());
        Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.ConnectionsPerIp));
    }
}

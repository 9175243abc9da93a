using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Relay.Protocol.Mqtt;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineConfigurationTests
{
    [Theory]
    [InlineData("--Relay:Mqtt:QueueDropPolicy=Sometimes", "Relay:Mqtt:QueueDropPolicy")]
    [InlineData("--Relay:Mqtt:MaxInflight=0", "Relay:Mqtt:MaxInflight")]
    [InlineData("--Relay:Mqtt:ClientCertificateMode=Maybe", "Relay:Mqtt:ClientCertificateMode")]
    [InlineData("--Relay:Mqtt:Port=8080", "Relay:Mqtt:Port")]
    [InlineData("--Relay:Mqtt:Prot=1884", "Relay:Mqtt: unknown key(s) 'Prot'")]
    [InlineData("--Relay:Mqtt:Acl:0:Permission=perhaps", "Relay:Mqtt:Acl:0:Permission")]
    [InlineData("--Relay:Mqtt:TcpTransport=Carrier", "Relay:Mqtt:TcpTransport: must be Sockets or Kestrel (was 'Carrier')")]
    [InlineData("--Relay:Mqtt:ClientCertificateMode=Maybe", "Relay:Mqtt:ClientCertificateMode: must be None, Optional or Required (was 'Maybe')")]
    [InlineData("--Relay:Mqtt:QueueDropPolicy=Sometimes", "Relay:Mqtt:QueueDropPolicy: must be DropOldest or DropNewest (was 'Sometimes')")]
    [InlineData("--Relay:Mqtt:QueueDropPolicy=7", "Relay:Mqtt:QueueDropPolicy: must be DropOldest or DropNewest (was '7')")]
    [InlineData("--Relay:Mqtt:Acl:0:Permission=perhaps", "Relay:Mqtt:Acl:0:Permission: must be Allow or Deny (was 'perhaps')")]
    [InlineData("--Relay:Mqtt:Acl:0:Action=read", "Relay:Mqtt:Acl:0:Action: must be Publish, Subscribe or All (was 'read')")]
    [InlineData("--Relay:Mqtt:AuthHook:Method=PUT", "Relay:Mqtt:AuthHook:Method: must be Post or Get (was 'PUT')")]
    public void InvalidMqttSetting_StopsStartup_NamingTheKey(string setting, string expected)
    {
        var error = Assert.Throws<RelayConfigurationException>(() => RelayHost.Build([setting, "--Relay:Http:Port=8080"]));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task EnumSettings_BindFromTheDocumentedNames_InAnyCase()
    {
        var data = Directory.CreateTempSubdirectory("relay-enums-").FullName;
        try
        {
            var (caPath, device) = TestDeviceCa.Create(data, "unused");
            device.Dispose();
            await using var app = RelayHost.Build(
            [
                $"--Relay:DataDirectory={data}",
                "--Relay:Mqtt:TcpTransport=kestrel",
                "--Relay:Mqtt:ClientCertificateMode=OPTIONAL",
                $"--Relay:Mqtt:ClientCertificateAuthorityPath={caPath}",
                "--Relay:Mqtt:QueueDropPolicy=dropnewest",
                "--Relay:Mqtt:Acl:0:Permission=deny",
                "--Relay:Mqtt:Acl:0:Action=subscribe",
                "--Relay:Mqtt:Acl:0:Topic=secret/#",
                "--Relay:Mqtt:AuthHook:Method=get",
            ]);
            var mqtt = app.Services.GetRequiredService<IOptions<MqttOptions>>().Value;
            Assert.Equal(MqttTcpTransport.Kestrel, mqtt.TcpTransport);
            Assert.Equal(MqttClientCertificateMode.Optional, mqtt.ClientCertificateMode);
            Assert.Equal(MqttQueueDropPolicy.DropNewest, mqtt.QueueDropPolicy);
            Assert.Equal((MqttAclPermission.Deny, MqttAclAction.Subscribe), (mqtt.Acl[0].Permission, mqtt.Acl[0].Action));
            Assert.Equal(MqttAuthHookMethod.Get, mqtt.AuthHook.Method);
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }
}

public sealed class EngineDisconnectTests
{
    [Fact]
    public async Task SessionExpiryOnDisconnect_AfterZeroOnConnect_IsProtocolError_MQTT_3_14_2_2()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c");
        await using var c = client;
        await client.SendAsync(w => MqttPacketWriter.WriteDisconnect(w, MqttProtocolVersion.V500, MqttReasonCode.Success, sessionExpiry: 60));
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.ProtocolError, Assert.Single(packets).Disconnect().ReasonCode);
    }

    [Fact]
    public async Task Shutdown_SendsV5ClientsDisconnect0x8B()
    {
        var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c");
        await using var c = client;
        var stopping = server.DisposeAsync().AsTask();
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.ServerShuttingDown, Assert.Single(packets).Disconnect().ReasonCode);
        await stopping;
    }

    [Fact]
    public async Task TakenOverConnection_PublishesItsWill_WhenNoDelay()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (watcher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "watcher");
        await using var w = watcher;
        await watcher.SubscribeAndWaitAsync("wills/#", 0);
        var (first, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "twin", MqttProtocolVersion.V311, o =>
        {
            o.Options.WillTopic = "wills/twin";
            o.Options.WillPayload = "replaced"u8.ToArray();
        });
        await using var f = first;
        var (second, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "twin", MqttProtocolVersion.V311);
        await using var s = second;
        Assert.Empty(await first.ReadUntilClosedAsync());
        Assert.Equal("replaced", (await watcher.ReceiveAsync(MqttPacketType.Publish)).PayloadText);
    }
}

using Relay.Protocol.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Push.Api;

/// <summary>Deleting a device or replacing its secret ends the connection it already has (v5: DISCONNECT 0x98).</summary>
public sealed class DeviceDisconnectTests
{
    [Theory]
    [InlineData("delete")]
    [InlineData("rotate")]
    public async Task AnOperatorsChange_EndsTheDevicesLiveConnection(string change)
    {
        await using var kit = await PushTestKit.StartAsync();
        var (device, _) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", MqttProtocolVersion.V500, static o =>
        {
            o.Options.Username = "d1";
            o.Options.Password = System.Text.Encoding.UTF8.GetBytes(PushTestKit.Secret);
            o.Options.HasPassword = true;
        });
        await using var _ = device;

        using var response = change == "delete"
            ? await kit.Http.DeleteAsync("/v1/devices/d1")
            : await kit.Http.PostAsync("/v1/devices/d1/secret", null);
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");

        var packets = await device.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.AdministrativeAction, Assert.Single(packets).Disconnect().ReasonCode);
        Assert.Equal(1, kit.Server.MqttMetrics().Ends(Relay.Server.Mqtt.MqttEndReason.Administrative));
    }
}

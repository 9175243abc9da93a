using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Relay.Protocol.Mqtt;
using Relay.Server.Devices;
using Relay.Server.Push;
using Relay.Server.Tests.Mqtt.Engine;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's L9: <c>DELETE /v1/devices/{id}</c> left the device's MQTT session, its queued
/// commands and its retained messages, and a device registered again under the id inherited them (another
/// physical device, another owner). Deleting a device now cancels its queued commands, ends its connection
/// and its session, and clears its retained messages.
/// </summary>
public sealed class DeletedDeviceTests
{
    /// <param name="when">
    /// <c>online</c>: deleted while connected (its retained will is published as the connection ends);
    /// <c>offline</c>: after a normal DISCONNECT; <c>pending-will</c>: after its connection dropped, with a will
    /// delayed for an hour (published when the session ends).
    /// </param>
    [Theory]
    [InlineData("offline")]
    [InlineData("online")]
    [InlineData("pending-will")]
    public async Task ADeviceRegisteredAgainUnderADeletedId_InheritsNothing(string when)
    {
        var onlineWhenDeleted = when == "online";
        await using var kit = await PushTestKit.StartAsync();
        var secret = await RegisterAsync(kit, "d9");

        // The first d9: a persistent session with its command subscription, a retained state message and a retained will.
        var (first, _) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d9", MqttProtocolVersion.V500, o =>
        {
            Persistent("d9", secret)(o);
            o.Options.WillTopic = "devices/d9/status";
            o.Options.WillPayload = "{\"online\":false}"u8.ToArray();
            o.Options.WillRetain = true;
            o.Options.WillQoS = 1;
            o.Options.WillDelayInterval = when == "pending-will" ? 3600u : null;
        });
        await using (first)
        {
            Assert.Equal([1], await first.SubscribeAndWaitAsync("devices/d9/commands", 1));
            await first.PublishAsync("devices/d9/state", "{\"owner\":\"first\"}", qos: 1, retain: true);
            await first.ReceiveAsync(MqttPacketType.PubAck);
            string queued;
            if (onlineWhenDeleted)
            {
                // It is on its way (handed to the connection, not acknowledged) when the device is deleted.
                queued = await PushTestKit.PushAsync(kit.Http, "d9", "open-door");
                await first.ReceiveAsync(MqttPacketType.Publish);
            }
            else if (when == "offline")
            {
                await first.DisconnectAsync();
                await first.ReadUntilClosedAsync();
                queued = await PushTestKit.PushAsync(kit.Http, "d9", "open-door");
            }
            else
            {
                // The connection drops without DISCONNECT: the will waits for its delay in the offline session.
                await first.DisposeAsync();
                var presence = kit.Server.Services.GetRequiredService<IDevicePresence>();
                await Poll.UntilAsync(() => !presence.IsOnline("d9"), "the server to see d9 gone");
                queued = await PushTestKit.PushAsync(kit.Http, "d9", "open-door");
            }

            using (var deleted = await kit.Http.DeleteAsync("/v1/devices/d9"))
            {
                Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
            }

            if (onlineWhenDeleted)
            {
                var packets = await first.ReadUntilClosedAsync();
                Assert.Equal(MqttReasonCode.AdministrativeAction, Assert.Single(packets, static p => p.Type == MqttPacketType.Disconnect).Disconnect().ReasonCode);
            }

            // The command can never reach the device it was meant for: canceled by the time the DELETE answers.
            Assert.Equal("canceled", (await PushTestKit.GetAsync(kit.Http, queued)).GetProperty("state").GetString());
        }

        // Another device gets the id.
        var newSecret = await RegisterAsync(kit, "d9");
        var (second, connAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d9", MqttProtocolVersion.V500, Persistent("d9", newSecret));
        await using var s = second;
        Assert.False(connAck.ConnAck().SessionPresent);

        // Nothing of the first device's reaches it: no retained state, no command (watched from the CONNACK on).
        await second.SubscribeAsync("devices/d9/#", 1);
        var received = new List<ReceivedPacket>();
        for (var packet = await second.ReceiveAsync(); packet.Type != MqttPacketType.SubAck; packet = await second.ReceiveAsync())
        {
            received.Add(packet);
        }

        received.AddRange(await second.DrainUntilPingAsync());
        Assert.DoesNotContain(received, static p => p.Type == MqttPacketType.Publish);
    }

    private static Action<MqttConnectOptionsBuilder> Persistent(string id, string secret) => o =>
    {
        o.Options.Username = id;
        o.Options.Password = Encoding.UTF8.GetBytes(secret);
        o.Options.HasPassword = true;
        o.Options.CleanStart = false;
        o.Options.SessionExpiryInterval = 3600;
    };

    private static async Task<string> RegisterAsync(PushTestKit kit, string id)
    {
        using var response = await kit.Http.PostAsync("/v1/devices", new StringContent($"{{\"id\":\"{id}\"}}", Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"{(int)response.StatusCode}: {text}");
        using var document = JsonDocument.Parse(text);
        return document.RootElement.GetProperty("secret").GetString()!;
    }
}

using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Relay.Server.Mqtt;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineTlsTests
{
    [Fact]
    public async Task ClientCertificateWhoseCnIsADevice_AuthenticatesWithoutPassword()
    {
        var directory = Directory.CreateTempSubdirectory("relay-mqtt-tls-").FullName;
        try
        {
            var (certificatePath, keyPath) = StunTcpTlsTests.WriteSelfSignedPem(directory);
            var (caPath, device) = TestDeviceCa.Create(directory, "dev1");
            using var deviceCertificate = device;

            await using var server = await EngineTestServer.StartAsync(
                $"Relay:Tls:CertificatePath={certificatePath}",
                $"Relay:Tls:KeyPath={keyPath}",
                "Relay:Mqtt:AllowAnonymous=false",
                "Relay:Mqtt:ClientCertificateMode=Optional",
                $"Relay:Mqtt:ClientCertificateAuthorityPath={caPath}",
                "Relay:Mqtt:Devices:0:Id=dev1",
                "Relay:Mqtt:Devices:0:Secret=unused-here");

            var (client, _) = await MqttTestClient.ConnectAsync(await MqttTestClient.OpenTlsAsync(server.MqttTlsPort, device), "dev1");
            await using var c = client;
            Assert.Equal([1], await client.SubscribeAndWaitAsync("devices/dev1/#", 1));
            Assert.Equal(1, server.MqttMetrics().Connections(MqttTransport.Tls));

            // Without a certificate (and without credentials) the same device is refused.
            var (anonymous, connAck) = await MqttTestClient.ConnectAsync(await MqttTestClient.OpenTlsAsync(server.MqttTlsPort, null), "dev1", MqttProtocolVersion.V500, expectSuccess: false);
            await using var a = anonymous;
            Assert.Equal((byte)MqttReasonCode.NotAuthorized, connAck.ConnAck().ReasonCode);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}

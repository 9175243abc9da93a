using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Relay.Mqtt;
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
            using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var caRequest = new CertificateRequest("CN=Test Device CA", caKey, HashAlgorithmName.SHA256);
            caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
            caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
            using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
            var caPath = Path.Combine(directory, "ca.pem");
            await File.WriteAllTextAsync(caPath, ca.ExportCertificatePem());

            using var deviceKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var deviceRequest = new CertificateRequest("CN=dev1", deviceKey, HashAlgorithmName.SHA256);
            deviceRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
            using var issued = deviceRequest.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3, 4]);
            using var withKey = issued.CopyWithPrivateKey(deviceKey);
            using var device = X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);

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

using System.Security.Cryptography;
using Relay.Server.Hosting;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's M8: a client certificate authenticates a device only when it chains (with the
/// intermediates the client sent, never the machine store) to <c>Relay:Mqtt:ClientCertificateAuthorityPath</c>,
/// is valid now, is for TLS client authentication, and its subject CN is a registered device id.
/// mosquitto_pub is the real peer.
/// </summary>
public sealed class ClientCertificateTests
{
    private static readonly Oid ServerAuthOnly = new("1.3.6.1.5.5.7.3.1");

    [Fact]
    public async Task OnlyTheRightCertificate_AuthenticatesTheDevice()
    {
        var directory = Directory.CreateTempSubdirectory("relay-client-certs-").FullName;
        try
        {
            using var serverPki = new TestPkiChain(Directory.CreateDirectory(Path.Combine(directory, "server")).FullName, "Server");
            serverPki.IssueServer();
            using var devices = new TestPkiChain(Directory.CreateDirectory(Path.Combine(directory, "devices")).FullName, "Devices");
            using var stranger = new TestPkiChain(Directory.CreateDirectory(Path.Combine(directory, "stranger")).FullName, "Stranger");
            await using var server = await RelayTestServer.StartAsync(
                $"Relay:Tls:CertificatePath={serverPki.FullChainPath}",
                $"Relay:Tls:KeyPath={serverPki.PrivateKeyPath}",
                "Relay:Mqtt:ClientCertificateMode=Optional",
                $"Relay:Mqtt:ClientCertificateAuthorityPath={devices.RootPath}",
                "Relay:Mqtt:Devices:0:Id=dev1",
                "Relay:Mqtt:Devices:0:Secret=not-used-in-this-test-0123456789");

            var right = devices.IssueClient("dev1", "right");
            var otherCa = stranger.IssueClient("dev1", "other-ca");
            var expired = devices.IssueClient("dev1", "expired", notBefore: DateTimeOffset.UtcNow.AddDays(-10), notAfter: DateTimeOffset.UtcNow.AddDays(-1));
            var notForClients = devices.IssueClient("dev1", "server-usage", usages: [ServerAuthOnly]);
            var unknown = devices.IssueClient("dev9", "unknown");
            foreach (var (name, files, clientId) in new[] { ("another CA", otherCa, "dev1"), ("expired", expired, "dev1"), ("serverAuth only", notForClients, "dev1"), ("unknown device", unknown, "dev9") })
            {
                var (code, output) = await PublishAsync(server.MqttTlsPort, serverPki.RootPath, files.CertificatePath, files.KeyPath, clientId);
                Assert.True(code != 0, $"{name}: mosquitto_pub was let in:\n{output}");
                files.Certificate.Dispose();
            }

            var (ok, transcript) = await PublishAsync(server.MqttTlsPort, serverPki.RootPath, right.CertificatePath, right.KeyPath, "dev1");
            Assert.True(ok == 0, "the device's own certificate, sent with its intermediate, authenticates it:\n" + transcript);
            right.Certificate.Dispose();
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task ACertificateFromTheTrustedRoot_WithoutClientAuthUsage_IsRefused()
    {
        var directory = Directory.CreateTempSubdirectory("relay-client-eku-").FullName;
        try
        {
            using var serverPki = new TestPkiChain(Directory.CreateDirectory(Path.Combine(directory, "server")).FullName, "Server");
            serverPki.IssueServer();
            using var devices = new TestPkiChain(Directory.CreateDirectory(Path.Combine(directory, "devices")).FullName, "Devices");
            await using var server = await RelayTestServer.StartAsync(
                $"Relay:Tls:CertificatePath={serverPki.FullChainPath}",
                $"Relay:Tls:KeyPath={serverPki.PrivateKeyPath}",
                "Relay:Mqtt:ClientCertificateMode=Optional",
                $"Relay:Mqtt:ClientCertificateAuthorityPath={devices.RootPath}",
                "Relay:Mqtt:Devices:0:Id=dev1",
                "Relay:Mqtt:Devices:0:Secret=not-used-in-this-test-0123456789");
            // Issued by the root itself: the chain is complete without intermediates, so only the usage can refuse it.
            var wrongUsage = devices.IssueClient("dev1", "server-usage", usages: [ServerAuthOnly], fromRoot: true);
            using var c = wrongUsage.Certificate;
            var (code, output) = await PublishAsync(server.MqttTlsPort, serverPki.RootPath, wrongUsage.CertificatePath, wrongUsage.KeyPath, "dev1");
            Assert.True(code != 0, "a serverAuth-only certificate was accepted as a device's:\n" + output);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Theory]
    [InlineData("Optional")]
    [InlineData("Required")]
    public async Task ClientCertificates_WithoutACa_AreAConfigurationError(string mode)
    {
        var error = await Assert.ThrowsAsync<RelayConfigurationException>(() => RelayTestServer.StartAsync($"Relay:Mqtt:ClientCertificateMode={mode}"));
        Assert.Contains("Relay:Mqtt:ClientCertificateAuthorityPath: required when Relay:Mqtt:ClientCertificateMode is not None", error.Message, StringComparison.Ordinal);
    }

    private static Task<(int ExitCode, string Output)> PublishAsync(int port, string serverRoot, string certificate, string key, string clientId) =>
        ExternalTool.RunAsync("mosquitto_pub", "-h", "127.0.0.1", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-V", "mqttv5",
            "--cafile", serverRoot, "--cert", certificate, "--key", key, "-i", clientId, "-t", $"devices/{clientId}/hello", "-m", "hi", "-q", "1");
}

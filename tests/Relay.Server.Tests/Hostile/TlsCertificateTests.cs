using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's H5 (the API, health, metrics and MQTT over WebSocket were plaintext only) and M9
/// (the certificate was loaded once, leaf only). Real peers: curl trusting only the test root, openssl
/// s_client counting the certificates sent and reading the serial of each new handshake.
/// </summary>
public sealed partial class TlsCertificateTests
{
    [Fact]
    public async Task HttpsPort_ServesHealthzAndMetrics_WithTheIntermediate_ToCurlTrustingOnlyTheRoot()
    {
        var directory = Directory.CreateTempSubdirectory("relay-https-").FullName;
        try
        {
            using var pki = new TestPkiChain(directory);
            var serial = pki.IssueServer();
            await using var server = await RelayTestServer.StartAsync($"Relay:Tls:CertificatePath={pki.FullChainPath}", $"Relay:Tls:KeyPath={pki.PrivateKeyPath}");

            var (code, output) = await ExternalTool.RunAsync("curl", "-sS", "--cacert", pki.RootPath, $"https://127.0.0.1:{server.HttpsPort}/healthz");
            Assert.True(code == 0, $"curl over https failed ({code}): {output}");
            Assert.StartsWith("ok", output, StringComparison.Ordinal);
            (code, output) = await ExternalTool.RunAsync("curl", "-sS", "--cacert", pki.RootPath, $"https://localhost:{server.HttpsPort}/metrics");
            Assert.True(code == 0, $"curl /metrics over https failed ({code}): {output}");
            Assert.Contains("relay_tls_certificate_reloads_total", output, StringComparison.Ordinal);

            var shown = await ShowCertificatesAsync(server.HttpsPort, pki.RootPath);
            Assert.Equal([serial, pki.Intermediate.SerialNumber], shown.Serials);
            Assert.True(shown.Verified, "openssl verifies the chain against the root alone:\n" + shown.Output);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task RenewedFilesOnDisk_AreServedByTheNextHandshake_OnHttpsMqttAndStunTls_AndABadPairKeepsTheOldOne()
    {
        var directory = Directory.CreateTempSubdirectory("relay-reload-").FullName;
        try
        {
            using var pki = new TestPkiChain(directory);
            var first = pki.IssueServer();
            await using var server = await RelayTestServer.StartAsync($"Relay:Tls:CertificatePath={pki.FullChainPath}", $"Relay:Tls:KeyPath={pki.PrivateKeyPath}");
            int[] ports = [server.HttpsPort, server.MqttTlsPort, server.TlsPort];
            foreach (var port in ports)
            {
                var shown = await ShowCertificatesAsync(port, pki.RootPath);
                Assert.Equal([first, pki.Intermediate.SerialNumber], shown.Serials);
                Assert.True(shown.Verified, $"port {port}: the chain verifies against the root alone:\n{shown.Output}");
            }

            // certbot renew: new files in place, no restart, no signal.
            var second = pki.IssueServer();
            foreach (var port in ports)
            {
                await Poll.UntilAsync(
                    async () => (await ShowCertificatesAsync(port, pki.RootPath)).Serials.FirstOrDefault() == second,
                    $"port {port} to serve the renewed certificate {second}",
                    interval: TimeSpan.FromMilliseconds(200));
            }

            // A key that does not match the certificate: refused, counted, and the current pair stays in service.
            var failedBefore = await FailedReloadsAsync(server.HttpPort);
            using (var other = new TestPkiChain(Directory.CreateDirectory(Path.Combine(directory, "other")).FullName, "Other"))
            {
                other.IssueServer();
                File.Copy(other.PrivateKeyPath, pki.PrivateKeyPath, overwrite: true);
            }

            await Poll.UntilAsync(async () => await FailedReloadsAsync(server.HttpPort) > failedBefore, "the mismatched pair to be refused", interval: TimeSpan.FromMilliseconds(100));
            foreach (var port in ports)
            {
                var shown = await ShowCertificatesAsync(port, pki.RootPath);
                Assert.Equal(second, shown.Serials.FirstOrDefault());
                Assert.True(shown.Verified, shown.Output);
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static async Task<long> FailedReloadsAsync(int httpPort)
    {
        using var http = new HttpClient();
        var text = await http.GetStringAsync($"http://127.0.0.1:{httpPort}/metrics");
        var match = FailedReloadsLine().Match(text);
        return match.Success ? long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : -1;
    }

    [GeneratedRegex("""relay_tls_certificate_reloads_total\{result="failed"\} (\d+)""")]
    private static partial Regex FailedReloadsLine();

    /// <summary>openssl s_client -showcerts: the serials of the certificates the server sent, leaf first, and whether the chain verified.</summary>
    internal static async Task<(string[] Serials, bool Verified, string Output)> ShowCertificatesAsync(int port, string rootPath)
    {
        var (_, output) = await ExternalTool.RunAsync("openssl", "s_client", "-connect", $"127.0.0.1:{port}", "-servername", "localhost", "-showcerts", "-CAfile", rootPath);
        var serials = PemBlock().Matches(output)
            .Select(static m =>
            {
                using var certificate = X509Certificate2.CreateFromPem(m.Value);
                return certificate.SerialNumber;
            })
            .ToArray();
        return (serials, output.Contains("Verify return code: 0 (ok)", StringComparison.Ordinal), output);
    }

    [GeneratedRegex("-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")]
    private static partial Regex PemBlock();
}

using System.Text;
using Microsoft.Extensions.Options;
using Relay.Rendezvous.Stun;
using Relay.Server.Api;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Turn;

namespace Relay.Server;

/// <summary>
/// Prints where everything is once every listener is up (and only then: a start that fails prints no
/// banner). Also on stdout, unconditionally: the banner is how a first-time user learns where things are.
/// </summary>
internal sealed class StartupBanner(
    IOptions<StunOptions> stun,
    IOptions<TurnOptions> turn,
    IOptions<MqttOptions> mqtt,
    IOptions<HttpOptions> http,
    ApiOptions api,
    ServerCertificate certificate,
    RelayDataDirectory dataDirectory,
    TurnRelay relay,
    DevelopmentTurnUser developmentUser,
    AdminTokens tokens,
    IDeviceRegistry devices) : IHostedLifecycleService
{
    public async Task StartedAsync(CancellationToken cancellationToken)
    {
        var registered = mqtt.Value.Enabled ? (await devices.ListAsync(cancellationToken).ConfigureAwait(false)).Count : 0;
        await Console.Out.WriteLineAsync(Compose(registered)).ConfigureAwait(false);
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private string Compose(int registeredDevices)
    {
        var stunOptions = stun.Value;
        var tls = certificate.Certificate is not null;
        var mqttOptions = mqtt.Value;
        var httpPort = http.Value.Port;
        var banner = new StringBuilder()
            .AppendLine("Relay is running.")
            .AppendLine($"  STUN      udp+tcp {stunOptions.Port} on {(stunOptions.ListenAddresses.Count == 0 ? "all addresses" : string.Join(", ", stunOptions.ListenAddresses))}{(tls ? $", tls {stunOptions.TlsPort}" : "  (TLS off: set Relay:Tls:CertificatePath and Relay:Tls:KeyPath)")}")
            .AppendLine($"  Limits    {(stunOptions.RateLimit.Enabled ? $"{stunOptions.RateLimit.RequestsPerSecond}/s per IP (burst {stunOptions.RateLimit.Burst})" : "rate limit OFF")}, {stunOptions.Tcp.MaxConnectionsPerIp} TCP connections per IP, {stunOptions.MaxMessageSize} B messages")
            .AppendLine($"  RFC 5780  {(Rfc5780Addresses.From(stunOptions) is { } five ? $"alternate {five.Alternate.WithPort(five.AlternatePort)}" : "off (set Relay:Stun:AlternateAddress)")}")
            .AppendLine($"  TURN      {TurnLine()}")
            .AppendLine($"  MQTT      {MqttLine(mqttOptions, tls, httpPort, registeredDevices)}")
            .AppendLine($"  HTTP      {httpPort}{(tls && http.Value.TlsPort != 0 ? $", https {http.Value.TlsPort}" : "  (https off: set Relay:Tls)")}  (/healthz, /metrics, /openapi.json, /v1/devices, /v1/commands, /v1/tokens, /v1/turn/credentials{(mqttOptions is { Enabled: true, WebSocket: true } ? ", MQTT over WebSocket at " + MqttWebSocketTransport.Path : string.Empty)})")
            .AppendLine($"  Admin     {(tokens.GeneratedToken is { } token ? $"token {token}  (shown once; only its hash is kept in {tokens.File})" : api.BootstrapToken is { Length: > 0 } ? "Relay:Api:BootstrapToken" : $"token minted earlier (hash in {tokens.File}; delete it to mint a new one)")}")
            .AppendLine($"  Data      {dataDirectory.FullPath}");
        return banner.ToString().TrimEnd();
    }

    private string TurnLine()
    {
        var options = turn.Value;
        if (!options.Enabled)
        {
            return "off (Relay:Turn:Enabled=false)";
        }

        var line = $"realm {options.Realm}, relay {relay.AdvertisedIPv4?.ToString() ?? "-"}/{relay.RelayIPv6?.ToString() ?? "-"} ports {options.RelayPortMin}-{options.RelayPortMax}";
        var peers = options.AllowLoopbackPeers ? ", loopback peers ALLOWED" : string.Empty;
        // The password only at the start that generated it: logs (journald, docker) keep every start's banner.
        var users = developmentUser.File is { } file
            ? developmentUser.Created
                ? $"{Environment.NewLine}            development user: {options.Users[0]}  (generated now and shown once; kept in {file}; set Relay:Turn:Users or Relay:Turn:SharedSecrets for real use)"
                : $"{Environment.NewLine}            development user: {options.Users[0].Split(':')[0]}  (password in {file}; delete it to generate a new one; set Relay:Turn:Users or Relay:Turn:SharedSecrets for real use)"
            : $", {options.Users.Count} static user(s), {options.SharedSecrets.Count} shared secret(s)";
        return line + peers + users;
    }

    private static string MqttLine(MqttOptions mqtt, bool tls, int httpPort, int registeredDevices)
    {
        if (!mqtt.Enabled)
        {
            return "off (Relay:Mqtt:Enabled=false)";
        }

        var tlsText = tls ? $"tls {mqtt.TlsPort} (client certificates {mqtt.ClientCertificateMode})" : "TLS off";
        var ws = mqtt.WebSocket ? $"WebSocket {MqttWebSocketTransport.Path} on HTTP {httpPort}" : "WebSocket off";
        var anonymous = mqtt.AllowAnonymous ? "anonymous clients ALLOWED" : "anonymous off";
        var devices = registeredDevices == 0
            ? $"{Environment.NewLine}            no device registered yet: dotnet run --project src/Relay -- devices add <id>  (prints its secret; see docs/mqtt.md)"
            : $", {registeredDevices} registered device(s), {mqtt.ServiceAccounts.Count} service account(s)";
        return $"tcp {mqtt.Port}, {tlsText}, {ws}; 3.1.1 + 5.0, {anonymous}, {mqtt.MaxPacketSize} B packets, {mqtt.MaxConnectionsPerIp} connections per IP{devices}";
    }
}

using System.Net;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Relay.Server.Api;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Push.Webhooks;
using Relay.Rendezvous.Stun;
using Relay.Server.StunTurn;
using Relay.Server.Turn;

namespace Relay.Server;

/// <summary>Builds the relay server: configuration, listeners and endpoints. Tests build it in-process.</summary>
public static class RelayHost
{
    /// <summary>
    /// Creates the application. Configuration errors throw <see cref="RelayConfigurationException"/>
    /// here, before anything listens.
    /// </summary>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = args,
            ContentRootPath = AppContext.BaseDirectory,
        });
        configure?.Invoke(builder);

        var configuration = RelayConfiguration.Load(builder.Configuration);
        var dataDirectory = Path.GetFullPath(configuration.Relay.DataDirectory);
        try
        {
            Directory.CreateDirectory(dataDirectory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RelayConfigurationException($"Relay:DataDirectory: cannot create '{dataDirectory}' ({e.Message})");
        }

        var devCredentialFile = EnsureDevelopmentTurnUser(configuration.Turn, dataDirectory);
        var adminTokens = AdminTokens.Load(configuration.Api, dataDirectory);
        builder.Services.AddSingleton(adminTokens);
        ApiServices.Add(builder.Services, configuration.Api, dataDirectory);
        WebhookServices.Add(builder.Services, builder.Configuration);
        builder.Services.AddSingleton(configuration);
        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(configuration.Stun));
        builder.Services.AddSingleton<StunMetrics>();
        builder.Services.AddSingleton<StunBindingService>();
        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(configuration.Turn));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<TurnMetrics>();
        builder.Services.AddSingleton(static services => new TurnCredentialStore(services.GetRequiredService<RelayConfiguration>().Turn, services.GetRequiredService<TimeProvider>(), services.GetService<Relay.Server.Rendezvous.RendezvousTurnSecret>()?.Secret));
        builder.Services.AddSingleton(static services => new TurnNonceService(services.GetRequiredService<TimeProvider>(), TimeSpan.FromSeconds(services.GetRequiredService<RelayConfiguration>().Turn.NonceLifetimeSeconds)));
        builder.Services.AddSingleton<TurnRelay>();

        // The relay's loops must run before the UDP listener hands it the first packet.
        builder.Services.AddHostedService(static services => services.GetRequiredService<TurnRelay>());
        builder.Services.AddSingleton<StunTurnUdpListener>();
        builder.Services.AddHostedService(static services => services.GetRequiredService<StunTurnUdpListener>());
        builder.Services.AddSingleton<StunTurnTcpConnectionHandler>();
        MqttServices.Add(builder.Services, configuration.Mqtt, dataDirectory);
        Relay.Server.Push.Commands.CommandServices.Add(builder.Services, builder.Configuration, dataDirectory);
        Relay.Server.Rendezvous.RendezvousServices.Add(builder.Services, builder.Configuration, configuration);

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            ConfigureStunListeners(kestrel, configuration);
            ConfigureHttpListeners(kestrel, configuration.Http);
            ConfigureMqttListeners(kestrel, configuration);
        });

        var app = builder.Build();
        if (configuration.Mqtt is { Enabled: true, WebSocket: true })
        {
            app.UseWebSockets();
            app.Map(MqttWebSocketTransport.Path, MqttWebSocketTransport.HandleAsync);
        }

        MapEndpoints(app);
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            adminTokens.PersistGenerated();
            // The registry answers from SQLite synchronously; this runs once, after the listeners are up.
            var devices = configuration.Mqtt.Enabled ? app.Services.GetRequiredService<IDeviceRegistry>().ListAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult().Count : 0;
            PrintBanner(configuration, dataDirectory, app.Services.GetRequiredService<TurnRelay>(), devCredentialFile, adminTokens, devices);
        });
        return app;
    }

    private static void ConfigureStunListeners(KestrelServerOptions kestrel, RelayConfiguration configuration)
    {
        var stun = configuration.Stun;
        var rfc5780 = Rfc5780Addresses.From(stun);
        var endpoints = new List<IPEndPoint>();
        if (rfc5780 is not null)
        {
            endpoints.AddRange(rfc5780.Endpoints.Select(static e => e.ToIPEndPoint()));
        }

        var addresses = RelayConfiguration.ParseAddresses(stun.ListenAddresses);
        if (addresses is null)
        {
            kestrel.ListenAnyIP(stun.Port, UseStun);
            if (configuration.Certificate is not null)
            {
                kestrel.ListenAnyIP(stun.TlsPort, listen => UseStunTls(listen, configuration));
            }

            return;
        }

        foreach (var address in addresses)
        {
            var endpoint = new IPEndPoint(address, stun.Port);
            if (!endpoints.Contains(endpoint))
            {
                endpoints.Add(endpoint);
            }
        }

        foreach (var endpoint in endpoints)
        {
            kestrel.Listen(endpoint, UseStun);
        }

        if (configuration.Certificate is not null)
        {
            foreach (var address in addresses)
            {
                kestrel.Listen(address, stun.TlsPort, listen => UseStunTls(listen, configuration));
            }
        }
    }

    private static void UseStun(ListenOptions listen) => listen.UseConnectionHandler<StunTurnTcpConnectionHandler>();

    private static void UseStunTls(ListenOptions listen, RelayConfiguration configuration)
    {
        listen.UseHttps(configuration.Certificate!);
        listen.UseConnectionHandler<StunTurnTcpConnectionHandler>();
    }

    private static void ConfigureMqttListeners(KestrelServerOptions kestrel, RelayConfiguration configuration)
    {
        var mqtt = configuration.Mqtt;
        if (!mqtt.Enabled)
        {
            return;
        }

        var addresses = RelayConfiguration.ParseAddresses(mqtt.ListenAddresses);
        void Both(int port, Action<ListenOptions> configure)
        {
            if (addresses is null)
            {
                kestrel.ListenAnyIP(port, configure);
                return;
            }

            foreach (var address in addresses)
            {
                kestrel.Listen(address, port, configure);
            }
        }

        if (mqtt.TcpTransport == "Kestrel")
        {
            Both(mqtt.Port, static listen => listen.UseConnectionHandler<MqttConnectionHandler>());
        }

        if (configuration.Certificate is { } certificate)
        {
            var mode = mqtt.ClientCertificateMode switch
            {
                "Required" => Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate,
                "Optional" => Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.AllowCertificate,
                _ => Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.NoCertificate,
            };
            var authorities = LoadAuthorities(mqtt.ClientCertificateAuthorityPath);
            Both(mqtt.TlsPort, listen =>
            {
                listen.UseHttps(https =>
                {
                    https.ServerCertificate = certificate;
                    https.ClientCertificateMode = mode;
                    if (mode != Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.NoCertificate)
                    {
                        https.ClientCertificateValidation = (client, chain, errors) => ValidateClientCertificate(client, authorities, errors);
                    }
                });
                listen.UseConnectionHandler<MqttConnectionHandler>();
            });
        }
    }

    private static System.Security.Cryptography.X509Certificates.X509Certificate2Collection? LoadAuthorities(string? path)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            return null;
        }

        var collection = new System.Security.Cryptography.X509Certificates.X509Certificate2Collection();
        collection.ImportFromPemFile(path);
        return collection;
    }

    // With a configured CA bundle the chain is built against it alone; otherwise the system store decides.
    private static bool ValidateClientCertificate(System.Security.Cryptography.X509Certificates.X509Certificate2 client, System.Security.Cryptography.X509Certificates.X509Certificate2Collection? authorities, System.Net.Security.SslPolicyErrors errors)
    {
        if (authorities is null)
        {
            return errors == System.Net.Security.SslPolicyErrors.None;
        }

        using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
        chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
        return chain.Build(client);
    }

    private static void ConfigureHttpListeners(KestrelServerOptions kestrel, HttpOptions http)
    {
        var addresses = RelayConfiguration.ParseAddresses(http.ListenAddresses);
        if (addresses is null)
        {
            kestrel.ListenAnyIP(http.Port);
            return;
        }

        foreach (var address in addresses)
        {
            kestrel.Listen(address, http.Port);
        }
    }

    private static void MapEndpoints(WebApplication app)
    {
        TurnCredentialsEndpoint.Map(app);
        ApiServices.Map(app);
        CommandEndpoints.Map(app);
        app.MapGet("/healthz", static (StunTurnUdpListener udp) =>
        {
            var text = new StringBuilder("ok\n");
            foreach (var endpoint in udp.BoundEndpoints)
            {
                text.Append("stun udp ").Append(endpoint).Append('\n');
            }

            return Results.Text(text.ToString(), "text/plain; charset=utf-8");
        });

        app.MapGet("/metrics", static (StunMetrics metrics, TurnMetrics turn, MqttMetrics mqtt, Relay.Server.Mqtt.Identity.MqttIdentityMetrics identity, Relay.Server.Push.Commands.PushMetrics push, ApiMetrics api, WebhookMetrics webhooks, Relay.Rendezvous.Introductions.RendezvousMetrics rendezvous) =>
        {
            var text = new StringBuilder();
            metrics.WritePrometheus(text);
            turn.WritePrometheus(text);
            mqtt.WritePrometheus(text);
            identity.WritePrometheus(text);
            push.WritePrometheus(text);
            api.WritePrometheus(text);
            webhooks.WritePrometheus(text);
            Relay.Server.Rendezvous.RendezvousPrometheus.Write(rendezvous, text);
            return Results.Text(text.ToString(), "text/plain; version=0.0.4; charset=utf-8");
        });
    }

    /// <summary>
    /// A first start with TURN on and no credentials configured gets one generated user, kept in the data
    /// directory so it survives restarts, and printed in the banner. Returns the file, or null.
    /// </summary>
    private static string? EnsureDevelopmentTurnUser(TurnOptions turn, string dataDirectory)
    {
        if (!turn.Enabled || turn.Users.Count > 0 || turn.SharedSecrets.Count > 0)
        {
            return null;
        }

        var file = Path.Combine(dataDirectory, "turn-dev-user.txt");
        string entry;
        try
        {
            if (File.Exists(file))
            {
                entry = File.ReadAllText(file).Trim();
            }
            else
            {
                entry = "dev:" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12));
                File.WriteAllText(file, entry + "\n");
                if (!OperatingSystem.IsWindows())
                {
                    File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RelayConfigurationException($"Relay:DataDirectory: cannot keep the development TURN user in '{file}' ({e.Message}); set Relay:Turn:Users instead");
        }

        if (!entry.Contains(':', StringComparison.Ordinal))
        {
            throw new RelayConfigurationException($"Relay:Turn:Users: '{file}' should hold one user:password line; delete it to generate a new one");
        }

        turn.Users.Add(entry);
        return file;
    }

    private static void PrintBanner(RelayConfiguration configuration, string dataDirectory, TurnRelay turn, string? devCredentialFile, AdminTokens tokens, int registeredDevices)
    {
        var stun = configuration.Stun;
        var banner = new StringBuilder()
            .AppendLine("Relay is running.")
            .AppendLine($"  STUN      udp+tcp {stun.Port} on {(stun.ListenAddresses.Count == 0 ? "all addresses" : string.Join(", ", stun.ListenAddresses))}{(configuration.Certificate is null ? "  (TLS off: set Relay:Tls:CertificatePath and Relay:Tls:KeyPath)" : $", tls {stun.TlsPort}")}")
            .AppendLine($"  Limits    {(stun.RateLimit.Enabled ? $"{stun.RateLimit.RequestsPerSecond}/s per IP (burst {stun.RateLimit.Burst})" : "rate limit OFF")}, {stun.Tcp.MaxConnectionsPerIp} TCP connections per IP, {stun.MaxMessageSize} B messages")
            .AppendLine($"  RFC 5780  {(Rfc5780Addresses.From(stun) is { } five ? $"alternate {five.Alternate.WithPort(five.AlternatePort)}" : "off (set Relay:Stun:AlternateAddress)")}")
            .AppendLine($"  TURN      {TurnLine(configuration.Turn, turn, devCredentialFile)}")
            .AppendLine($"  MQTT      {MqttLine(configuration, registeredDevices)}")
            .AppendLine($"  HTTP      {configuration.Http.Port}  (/healthz, /metrics, /openapi.json, /v1/devices, /v1/commands, /v1/tokens, /v1/turn/credentials{(configuration.Mqtt is { Enabled: true, WebSocket: true } ? ", MQTT over WebSocket at " + MqttWebSocketTransport.Path : string.Empty)})")
            .AppendLine($"  Admin     {(tokens.GeneratedToken is { } token ? $"token {token}  (shown once; only its hash is kept in {tokens.File})" : configuration.Api.BootstrapToken is { Length: > 0 } ? "Relay:Api:BootstrapToken" : $"token minted earlier (hash in {tokens.File}; delete it to mint a new one)")}")
            .AppendLine($"  Data      {dataDirectory}");
        static string MqttLine(RelayConfiguration configuration, int registeredDevices)
        {
            var mqtt = configuration.Mqtt;
            if (!mqtt.Enabled)
            {
                return "off (Relay:Mqtt:Enabled=false)";
            }

            var tls = configuration.Certificate is null ? "TLS off" : $"tls {mqtt.TlsPort} (client certificates {mqtt.ClientCertificateMode})";
            var ws = mqtt.WebSocket ? $"WebSocket {MqttWebSocketTransport.Path} on HTTP {configuration.Http.Port}" : "WebSocket off";
            var anonymous = mqtt.AllowAnonymous ? "anonymous clients ALLOWED" : "anonymous off";
            var devices = registeredDevices == 0
                ? $"{Environment.NewLine}            no device registered yet: dotnet run --project src/Relay -- devices add <id>  (prints its secret; see docs/mqtt.md)"
                : $", {registeredDevices} registered device(s), {mqtt.ServiceAccounts.Count} service account(s)";
            return $"tcp {mqtt.Port}, {tls}, {ws}; 3.1.1 + 5.0, {anonymous}, {mqtt.MaxPacketSize} B packets, {mqtt.MaxConnectionsPerIp} connections per IP{devices}";
        }

        static string TurnLine(TurnOptions options, TurnRelay turn, string? devCredentialFile)
        {
            if (!options.Enabled)
            {
                return "off (Relay:Turn:Enabled=false)";
            }

            var relay = $"realm {options.Realm}, relay {turn.AdvertisedIPv4?.ToString() ?? "-"}/{turn.RelayIPv6?.ToString() ?? "-"} ports {options.RelayPortMin}-{options.RelayPortMax}";
            var peers = options.AllowLoopbackPeers ? ", loopback peers ALLOWED" : string.Empty;
            var users = devCredentialFile is not null
                ? $"{Environment.NewLine}            development user: {options.Users[0]}  (generated, kept in {devCredentialFile}; set Relay:Turn:Users or Relay:Turn:SharedSecrets for real use)"
                : $", {options.Users.Count} static user(s), {options.SharedSecrets.Count} shared secret(s)";
            return relay + peers + users;
        }

        // Also on stdout, unconditionally: the banner is how a first-time user learns where things are.
        Console.WriteLine(banner.ToString().TrimEnd());
    }
}

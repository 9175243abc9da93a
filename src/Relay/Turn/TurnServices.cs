using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Rendezvous.Stun;
using Relay.Server.Hosting;
using Relay.Server.Telemetry;

namespace Relay.Server.Turn;

/// <summary>Registers the TURN relay (RFC 8656) behind the STUN ports: <c>Relay:Turn</c>, credentials, nonces, the relay and its metrics.</summary>
internal static class TurnServices
{
    /// <summary>
    /// <see cref="TurnRelay"/> is registered as a singleton, not as a hosted service: the STUN/TURN listener
    /// starts it before its first packet (see <c>AddRelayStunTurn</c>).
    /// </summary>
    public static IServiceCollection AddRelayTurn(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddRelayOptions<TurnOptions>(configuration, TurnOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TurnOptions>, TurnOptionsValidator>());
        services.AddSingleton<DevelopmentTurnUser>();
        services.AddSingleton<IPostConfigureOptions<TurnOptions>>(static sp => sp.GetRequiredService<DevelopmentTurnUser>());
        services.AddRelayMetrics<TurnMetrics>();
        services.AddSingleton(static sp => new TurnCredentialStore(
            sp.GetRequiredService<IOptions<TurnOptions>>().Value,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<EphemeralTurnSecret>()?.Secret));
        services.AddSingleton(static sp => new TurnNonceService(
            sp.GetRequiredService<TimeProvider>(),
            TimeSpan.FromSeconds(sp.GetRequiredService<IOptions<TurnOptions>>().Value.NonceLifetimeSeconds)));
        services.AddSingleton<TurnRelay>();
        services.AddSingleton<TurnUris>();
        return services;
    }
}

/// <summary>
/// A TURN REST secret generated at startup (by a feature that hands out credentials, e.g. rendezvous, when
/// <c>Relay:Turn:SharedSecrets</c> is empty), so devices get working credentials with no setup. It lives in
/// memory only: credentials minted from it stop working when the server restarts, and devices ask again.
/// </summary>
internal sealed record EphemeralTurnSecret(byte[]? Secret)
{
    /// <summary>32 random bytes when TURN is on and has no configured secret; otherwise none.</summary>
    public static EphemeralTurnSecret For(TurnOptions turn) =>
        new(turn.Enabled && turn.SharedSecrets.Count == 0 ? RandomNumberGenerator.GetBytes(32) : null);
}

/// <summary>
/// A first start with TURN on and no credentials configured gets one generated user, kept in the data
/// directory so it survives restarts, and printed in the banner.
/// </summary>
internal sealed class DevelopmentTurnUser(RelayDataDirectory dataDirectory) : IPostConfigureOptions<TurnOptions>
{
    /// <summary>The file holding the generated user, or null when none was needed.</summary>
    public string? File { get; private set; }

    /// <summary>True when this start generated the user: only then is its password printed (review L2).</summary>
    public bool Created { get; private set; }

    public void PostConfigure(string? name, TurnOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!options.Enabled || options.Users.Count > 0 || options.SharedSecrets.Count > 0)
        {
            return;
        }

        var file = Path.Combine(dataDirectory.FullPath, "turn-dev-user.txt");
        string entry;
        try
        {
            if (System.IO.File.Exists(file))
            {
                entry = System.IO.File.ReadAllText(file).Trim();
            }
            else
            {
                entry = "dev:" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));
                PrivateFiles.WriteAllText(file, entry + "\n");
                Created = true;
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

        options.Users.Add(entry);
        File = file;
    }
}

/// <summary>
/// TURN URIs (RFC 7065) for a client: on the host it reached us by, unless <c>Relay:Turn:ExternalAddress</c>
/// names the public one; <c>turns:</c> only when TLS is on.
/// </summary>
internal sealed class TurnUris(IOptions<TurnOptions> turn, IOptions<StunOptions> stun, ServerCertificate certificate)
{
    public List<string> For(string reachedHost, bool includeStun = false)
    {
        var host = turn.Value.ExternalAddress is { Length: > 0 } external ? external : reachedHost;
        if (host.Contains(':', StringComparison.Ordinal) && !host.StartsWith('['))
        {
            host = $"[{host}]";
        }

        var port = stun.Value.Port.ToString(CultureInfo.InvariantCulture);
        var uris = new List<string> { $"turn:{host}:{port}?transport=udp", $"turn:{host}:{port}?transport=tcp" };
        if (certificate.Certificate is not null)
        {
            uris.Add($"turns:{host}:{stun.Value.TlsPort.ToString(CultureInfo.InvariantCulture)}?transport=tcp");
        }

        if (includeStun)
        {
            uris.Add($"stun:{host}:{port}");
        }

        return uris;
    }
}

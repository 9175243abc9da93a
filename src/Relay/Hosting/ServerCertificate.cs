using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary>
/// The one certificate of every TLS listener (<c>Relay:Tls</c>: HTTPS, MQTT over TLS, STUN/TURN over TLS), or
/// none when TLS is off. Each handshake reads <see cref="Current"/>, so a renewed certificate is served from the
/// next handshake on, without a restart (a restart would make every device reconnect at once, review H2).
/// The certificate file may hold the chain (leaf first, then intermediates, as certbot's <c>fullchain.pem</c>):
/// the intermediates are sent in every handshake, since a client that trusts only the root cannot build the
/// path without them (review M9).
/// </summary>
internal sealed class ServerCertificate : IDisposable
{
    // certbot and most deploy scripts write the certificate and the key one after the other: a change is
    // acted on once the files have been quiet this long, so the pair is read after both writes.
    private static readonly TimeSpan ReloadDelay = TimeSpan.FromMilliseconds(500);

    private readonly TlsOptions _options;
    private readonly TlsMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Lock _reloadGate = new();
    private readonly List<FileSystemWatcher> _watchers = [];
    private volatile LoadedCertificate? _current;
    private ITimer? _reloadTimer;
    private bool _disposed;

    /// <summary>Loads the configured pair now; the options were validated (and the files read once) at start.</summary>
    public ServerCertificate(IOptions<TlsOptions> options, TlsMetrics metrics, ILogger<ServerCertificate> logger, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentNullException.ThrowIfNull(time);
        _options = options.Value;
        _metrics = metrics;
        _logger = logger;
        _time = time;
        var errors = new List<string>();

        // An expired certificate at start is served (with a warning) rather than refused: refusing would take
        // STUN, MQTT and the API down with it, and clients that pin or ignore dates keep working meanwhile.
        _current = TryLoad(_options, errors, time, rejectExpired: false);
        if (errors.Count > 0)
        {
            throw RelayConfigurationException.FromProblems(errors);
        }

        if (_current is { } loaded)
        {
            _metrics.Serve(loaded.Leaf);
            if (loaded.Leaf.NotAfter.ToUniversalTime() < time.GetUtcNow().UtcDateTime)
            {
                _logger.LogWarning("Relay:Tls:CertificatePath: the certificate (subject {Subject}, serial {Serial}) expired on {NotAfter:u}; clients that check dates will refuse it", loaded.Leaf.Subject, loaded.Leaf.SerialNumber, loaded.Leaf.NotAfter.ToUniversalTime());
            }
        }
    }

    /// <summary>True when TLS is configured (the listeners exist).</summary>
    public bool Enabled => _current is not null;

    /// <summary>The leaf served now, when TLS is configured.</summary>
    public X509Certificate2? Certificate => _current?.Leaf;

    /// <summary>The leaf and its intermediates served now, when TLS is configured.</summary>
    public SslStreamCertificateContext? Current => _current?.Context;

    /// <summary>
    /// The options for one handshake: the current certificate with its chain, TLS 1.2 and 1.3 only. ALPN is left
    /// to the caller (Kestrel's HTTP listener fills it when it is null).
    /// </summary>
    public SslServerAuthenticationOptions ServerOptions()
    {
        var current = _current ?? throw new InvalidOperationException("TLS is not configured (Relay:Tls)");
        return new SslServerAuthenticationOptions
        {
            ServerCertificateContext = current.Context,

            // TLS 1.0 and 1.1 are deprecated (RFC 8996); the OS default may still allow them.
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        };
    }

    /// <summary>
    /// Watches the directories of both files (not the files: certbot replaces the symlinks in <c>live/</c>, an
    /// editor or <c>mv</c> replaces the inode) and reloads once they have been quiet for a moment.
    /// </summary>
    public void StartWatching()
    {
        if (_current is null || _reloadTimer is not null)
        {
            return;
        }

        _reloadTimer = _time.CreateTimer(static state => ((ServerCertificate)state!).Reload(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        var directories = new[] { _options.CertificatePath!, _options.KeyPath! }
            .Select(static p => Path.GetDirectoryName(Path.GetFullPath(p))!)
            .Distinct(StringComparer.Ordinal);
        foreach (var directory in directories)
        {
            var watcher = new FileSystemWatcher(directory)
            {
                NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName | NotifyFilters.LastWrite | NotifyFilters.Size | NotifyFilters.CreationTime,
                IncludeSubdirectories = false,
            };
            watcher.Changed += OnFileEvent;
            watcher.Created += OnFileEvent;
            watcher.Deleted += OnFileEvent;
            watcher.Renamed += OnFileEvent;
            watcher.Error += OnWatcherError;
            watcher.EnableRaisingEvents = true;
            _watchers.Add(watcher);
        }
    }

    /// <summary>
    /// Reads the files again and serves the new pair if it is good: certificate and key match, and it has not
    /// expired. A bad pair is counted and logged, and the current one stays in service. False when nothing
    /// new was taken into service.
    /// </summary>
    public bool Reload()
    {
        lock (_reloadGate)
        {
            var current = _current;
            if (_disposed || current is null)
            {
                return false;
            }

            var errors = new List<string>();
            var loaded = TryLoad(_options, errors, _time, rejectExpired: true);
            if (loaded is null)
            {
                _metrics.CountReload(succeeded: false);
                _logger.LogWarning("TLS certificate not reloaded, still serving subject {Subject}, serial {Serial}, valid until {NotAfter:u}: {Problem}", current.Leaf.Subject, current.Leaf.SerialNumber, current.Leaf.NotAfter.ToUniversalTime(), string.Join("; ", errors));
                return false;
            }

            if (loaded.Fingerprint.AsSpan().SequenceEqual(current.Fingerprint))
            {
                // Some other file in the directory changed, or the same bytes were written again.
                loaded.Dispose();
                return false;
            }

            // The old certificate is not disposed: a handshake in progress may still hold its context. A
            // renewal every few weeks leaves a few kilobytes for the collector.
            _current = loaded;
            _metrics.Serve(loaded.Leaf);
            _metrics.CountReload(succeeded: true);
            _logger.LogInformation("TLS certificate reloaded: subject {Subject}, serial {Serial}, valid until {NotAfter:u}, {Intermediates} intermediate(s)", loaded.Leaf.Subject, loaded.Leaf.SerialNumber, loaded.Leaf.NotAfter.ToUniversalTime(), loaded.Intermediates);
            return true;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_reloadGate)
        {
            _disposed = true;
        }

        foreach (var watcher in _watchers)
        {
            watcher.Dispose();
        }

        _reloadTimer?.Dispose();
        _current?.Dispose();
    }

    /// <summary>
    /// Reads the pair: null when TLS is off or the files are unusable (with a line in <paramref name="errors"/>).
    /// Each file is read once, so a write between two reads cannot pair one version's certificate with
    /// another's key.
    /// </summary>
    internal static LoadedCertificate? TryLoad(TlsOptions tls, List<string> errors, TimeProvider time, bool rejectExpired)
    {
        var hasCertificate = !string.IsNullOrWhiteSpace(tls.CertificatePath);
        var hasKey = !string.IsNullOrWhiteSpace(tls.KeyPath);
        if (hasCertificate != hasKey)
        {
            errors.Add($"{(hasCertificate ? "Relay:Tls:KeyPath" : "Relay:Tls:CertificatePath")}: must be set together with {(hasCertificate ? "Relay:Tls:CertificatePath" : "Relay:Tls:KeyPath")}");
            return null;
        }

        if (!hasCertificate)
        {
            return null;
        }

        if (!File.Exists(tls.CertificatePath))
        {
            errors.Add($"Relay:Tls:CertificatePath: file '{tls.CertificatePath}' does not exist");
            return null;
        }

        if (!File.Exists(tls.KeyPath))
        {
            errors.Add($"Relay:Tls:KeyPath: file '{tls.KeyPath}' does not exist");
            return null;
        }

        X509Certificate2? leaf = null;
        var chain = new X509Certificate2Collection();
        try
        {
            var certificateBytes = File.ReadAllBytes(tls.CertificatePath!);
            var keyBytes = File.ReadAllBytes(tls.KeyPath!);
            var certificatePem = Encoding.ASCII.GetString(certificateBytes);

            // The first certificate in the file is the leaf, and the key must be its key (CreateFromPem checks).
            using (var pem = X509Certificate2.CreateFromPem(certificatePem, Encoding.ASCII.GetString(keyBytes)))
            {
                // Re-imported as PKCS#12: SslStream needs a key that is not ephemeral on some platforms.
                leaf = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            }

            chain.ImportFromPem(certificatePem);
            var intermediates = new X509Certificate2Collection();
            foreach (var certificate in chain)
            {
                if (!string.Equals(certificate.Thumbprint, leaf.Thumbprint, StringComparison.Ordinal))
                {
                    intermediates.Add(certificate);
                }
            }

            if (rejectExpired && leaf.NotAfter.ToUniversalTime() < time.GetUtcNow().UtcDateTime)
            {
                errors.Add($"Relay:Tls:CertificatePath: the certificate in '{tls.CertificatePath}' (serial {leaf.SerialNumber}) expired on {leaf.NotAfter.ToUniversalTime():u}");
                leaf.Dispose();
                return null;
            }

            // offline: the chain is built from the file alone; the server never fetches intermediates (AIA)
            // or OCSP responses on a client's behalf.
            var context = SslStreamCertificateContext.Create(leaf, intermediates, offline: true);
            var fingerprint = new byte[SHA256.HashSizeInBytes * 2];
            SHA256.HashData(certificateBytes, fingerprint);
            SHA256.HashData(keyBytes, fingerprint.AsSpan(SHA256.HashSizeInBytes));
            return new LoadedCertificate(leaf, context, fingerprint, intermediates.Count);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            leaf?.Dispose();
            errors.Add($"Relay:Tls:CertificatePath/KeyPath: cannot load the PEM certificate and key ({e.Message})");
            return null;
        }
        finally
        {
            // The leaf's second copy; the intermediates stay alive in the context.
            foreach (var certificate in chain)
            {
                if (leaf is not null && string.Equals(certificate.Thumbprint, leaf.Thumbprint, StringComparison.Ordinal))
                {
                    certificate.Dispose();
                }
            }
        }
    }

    private void OnFileEvent(object sender, FileSystemEventArgs e) => _reloadTimer?.Change(ReloadDelay, Timeout.InfiniteTimeSpan);

    private void OnWatcherError(object sender, ErrorEventArgs e)
    {
        // Typically the inotify watch or queue limit: changes may have been missed, so look now.
        _logger.LogWarning(e.GetException(), "Watching the TLS certificate files failed; checking them now. Renewals may need a restart until this is fixed (fs.inotify.max_user_watches)");
        _reloadTimer?.Change(ReloadDelay, Timeout.InfiniteTimeSpan);
    }

    /// <summary>One loaded pair: the leaf (with its key), the context sent in handshakes, and a hash of both files.</summary>
    internal sealed record LoadedCertificate(X509Certificate2 Leaf, SslStreamCertificateContext Context, byte[] Fingerprint, int Intermediates) : IDisposable
    {
        public void Dispose() => Leaf.Dispose();
    }
}

/// <summary>Starts watching the certificate files once the host starts (and not in a host that is only built).</summary>
internal sealed class ServerCertificateWatch(ServerCertificate certificate) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        certificate.StartWatching();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

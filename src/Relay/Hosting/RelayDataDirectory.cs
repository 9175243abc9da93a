using System.Globalization;
using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary>
/// <c>Relay:DataDirectory</c> as a full path, created 0700 when first resolved (the composition root does so
/// before any feature opens a file in it), and, once <see cref="Claim"/> is called (by the composition root, after
/// the configuration proved valid), owned by this process until disposed: an exclusive lock on
/// <c>relay.lock</c> keeps a second server off the same SQLite files and tokens (review L5), whose writes would
/// interleave with ours.
/// </summary>
internal sealed class RelayDataDirectory : IDisposable
{
    /// <summary>Held (flock, exclusive) for the process lifetime.</summary>
    public const string LockFileName = "relay.lock";

    /// <summary>The lock holder's process id, for the message a second server prints.</summary>
    public const string PidFileName = "relay.pid";

    private readonly Lock _gate = new();
    private FileStream? _lock;
    private bool _disposed;

    /// <summary>
    /// Resolves and creates the directory; throws <see cref="RelayConfigurationException"/> when it cannot be
    /// created. A directory others can read is used, with a warning.
    /// </summary>
    public RelayDataDirectory(IOptions<RelayOptions> options, ILogger<RelayDataDirectory>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        FullPath = Path.GetFullPath(options.Value.DataDirectory);
        try
        {
            PrivateFiles.CreateDirectory(FullPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RelayConfigurationException($"Relay:DataDirectory: cannot create '{FullPath}' ({e.Message})");
        }

        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(FullPath) & PrivateFiles.GroupOrOther) != 0)
        {
            // Not refused: the operator may mean it (a shared backup group). The files in it are 0600 regardless.
            logger?.LogWarning("Relay:DataDirectory: '{Directory}' is open to other users (mode {Mode}); it holds device secret hashes, commands and their results: chmod 700 it", FullPath, Convert.ToString((int)File.GetUnixFileMode(FullPath), 8));
        }
    }

    /// <summary>The absolute path.</summary>
    public string FullPath { get; }

    /// <summary>
    /// Takes the directory for this process (idempotent); throws <see cref="RelayConfigurationException"/> naming
    /// the other server's pid when one holds it.
    /// </summary>
    public void Claim()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _lock ??= TakeLock(FullPath);
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            _lock?.Dispose();
            _lock = null;
        }
    }

    private static FileStream TakeLock(string directory)
    {
        var path = Path.Combine(directory, LockFileName);
        FileStream stream;
        try
        {
            // FileShare.None is an exclusive flock(2) on Unix (and a sharing lock on Windows): released by the
            // kernel when the process ends, however it ends, so a crash leaves nothing stale behind.
            var lockOptions = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
            {
                lockOptions.UnixCreateMode = PrivateFiles.FileMode;
            }

            stream = new FileStream(path, lockOptions);
        }
        catch (IOException)
        {
            var pidFile = Path.Combine(directory, PidFileName);
            var owner = File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? $"pid {pid}" : "pid unknown";
            throw new RelayConfigurationException($"Relay:DataDirectory: '{directory}' is in use by another Relay server ({owner}); run one server per data directory");
        }
        catch (UnauthorizedAccessException e)
        {
            throw new RelayConfigurationException($"Relay:DataDirectory: cannot lock '{path}' ({e.Message})");
        }

        try
        {
            PrivateFiles.WriteAllText(Path.Combine(directory, PidFileName), Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stream.Dispose();
            throw new RelayConfigurationException($"Relay:DataDirectory: cannot write '{Path.Combine(directory, PidFileName)}' ({e.Message})");
        }

        return stream;
    }
}

using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary><c>Relay:DataDirectory</c> as a full path, created when first resolved (the composition root does so before any feature opens a file in it).</summary>
internal sealed class RelayDataDirectory
{
    /// <summary>Resolves and creates the directory; throws <see cref="RelayConfigurationException"/> when it cannot be created.</summary>
    public RelayDataDirectory(IOptions<RelayOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        FullPath = Path.GetFullPath(options.Value.DataDirectory);
        try
        {
            Directory.CreateDirectory(FullPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RelayConfigurationException($"Relay:DataDirectory: cannot create '{FullPath}' ({e.Message})");
        }
    }

    /// <summary>The absolute path.</summary>
    public string FullPath { get; }
}

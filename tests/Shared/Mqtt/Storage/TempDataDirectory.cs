namespace Relay.Server.Tests.Mqtt.Storage;

/// <summary>A fresh data directory per test, deleted afterwards.</summary>
internal sealed class TempDataDirectory : IDisposable
{
    public TempDataDirectory() => Path = Directory.CreateTempSubdirectory("relay-mqtt-").FullName;

    public string Path { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

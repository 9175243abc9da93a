namespace Relay.Server.Tests.Mqtt.Interop;

internal static class RepoPaths
{
    /// <summary>The repository root: the first directory above the test binaries that holds Relay.sln.</summary>
    public static string Root { get; } = FindRoot();

    public static string PahoScript => Path.Combine(Root, "tests", "Relay.Server.Tests", "Mqtt", "Interop", "scripts", "mqtt_client.py");

    public static string RelayDll => Path.Combine(Root, "src", "Relay", "bin", "Release", "net10.0", "Relay.dll");

    private static string FindRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "Relay.sln")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException("Relay.sln not found above " + AppContext.BaseDirectory);
    }
}

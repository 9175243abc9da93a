using System.Text;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's L1 (permissions of the data directory and its files), L5 (two servers on one
/// directory; a corrupt database at start) and L2's banner half (secrets printed on every start).
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class DataDirectoryTests
{
    private const UnixFileMode GroupOrOther =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    [Fact]
    public async Task ANewDataDirectory_Is0700_AndEveryFileTheServerWritesIn_Is0600()
    {
        var parent = Directory.CreateTempSubdirectory("relay-perms-").FullName;
        var data = Path.Combine(parent, "data");
        try
        {
            await using (var server = await RelayTestServer.StartAsync($"Relay:DataDirectory={data}"))
            {
                // The admin token's hash is stored once the server is up; wait for it rather than race it.
                await Poll.UntilAsync(() => File.Exists(Path.Combine(data, "admin-token.sha256")), "the admin token hash to be stored");
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(data));
                var files = Directory.GetFiles(data, "*", SearchOption.AllDirectories);
                Assert.Contains(files, static f => f.EndsWith("mqtt.db", StringComparison.Ordinal));
                Assert.Contains(files, static f => f.EndsWith("commands.db-wal", StringComparison.Ordinal));
                Assert.Contains(files, static f => f.EndsWith("turn-dev-user.txt", StringComparison.Ordinal));
                var loose = files.Where(static f => (File.GetUnixFileMode(f) & GroupOrOther) != 0).Select(static f => $"{Path.GetFileName(f)} {File.GetUnixFileMode(f)}").ToArray();
                Assert.True(loose.Length == 0, "readable by group or others: " + string.Join(", ", loose));
            }
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public async Task AnExistingDataDirectoryOpenToOthers_IsWarnedAbout_NotRefused()
    {
        var parent = Directory.CreateTempSubdirectory("relay-loose-").FullName;
        var data = Directory.CreateDirectory(Path.Combine(parent, "data")).FullName;
        File.SetUnixFileMode(data, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        try
        {
            await using var server = RelayServerProcess.Start(data);
            await RelayServerProcess.WaitForBannerAsync(server);
            Assert.Contains($"Relay:DataDirectory: '{data}' is open to other users (mode 755)", server.Transcript, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public async Task ASecondServerOnTheSameDataDirectory_ExitsWith2_NamingTheDirectoryAndTheOwner()
    {
        await using var first = await RelayTestServer.StartAsync();
        await using var second = RelayServerProcess.Start(first.DataDirectory);
        var code = await second.WaitForExitAsync("the second server", TimeSpan.FromSeconds(60));
        Assert.True(code == 2, $"exit code {code}:\n{second.Transcript}");
        Assert.Contains($"Relay:DataDirectory: '{first.DataDirectory}' is in use by another Relay server (pid {Environment.ProcessId})", second.Transcript, StringComparison.Ordinal);
        Assert.DoesNotContain("Relay is running", second.Transcript, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("mqtt.db")]
    [InlineData("commands.db")]
    public async Task ACorruptDatabase_StopsStartup_WithOneLineNamingTheFile_AndExitCode2(string file)
    {
        var parent = Directory.CreateTempSubdirectory("relay-corrupt-").FullName;
        var data = Directory.CreateDirectory(Path.Combine(parent, "data")).FullName;
        var path = Path.Combine(data, file);
        await File.WriteAllTextAsync(path, string.Concat(Enumerable.Repeat("this is not an SQLite database. ", 256)), Encoding.ASCII);
        try
        {
            await using var server = RelayServerProcess.Start(data);
            var code = await server.WaitForExitAsync($"the server on a corrupt {file}", TimeSpan.FromSeconds(60));
            Assert.True(code == 2, $"exit code {code}:\n{server.Transcript}");
            Assert.Contains($"'{path}' is not a usable SQLite database", server.Transcript, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", server.Transcript, StringComparison.Ordinal);
            Assert.DoesNotContain("Unhandled exception", server.Transcript, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public async Task GeneratedSecrets_ArePrintedOnlyByTheStartThatCreatesThem()
    {
        var parent = Directory.CreateTempSubdirectory("relay-banner-").FullName;
        var data = Path.Combine(parent, "data");
        try
        {
            string firstTranscript;
            await using (var first = RelayServerProcess.Start(data))
            {
                await RelayServerProcess.WaitForBannerAsync(first);
                firstTranscript = first.Transcript;
            }

            var password = File.ReadAllText(Path.Combine(data, "turn-dev-user.txt")).Trim().Split(':')[1];
            Assert.Contains(password, firstTranscript, StringComparison.Ordinal);
            Assert.Contains("token rly_", firstTranscript, StringComparison.Ordinal);

            await using var second = RelayServerProcess.Start(data);
            await RelayServerProcess.WaitForBannerAsync(second);
            var transcript = second.Transcript;
            Assert.DoesNotContain(password, transcript, StringComparison.Ordinal);
            Assert.DoesNotContain("rly_", transcript, StringComparison.Ordinal);
            Assert.Contains("turn-dev-user.txt", transcript, StringComparison.Ordinal);
            Assert.Contains("admin-token.sha256", transcript, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }
}

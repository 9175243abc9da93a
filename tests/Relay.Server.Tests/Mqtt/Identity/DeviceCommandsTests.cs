using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Relay.Server.Cli;
using Relay.Server.Hosting;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Storage;

namespace Relay.Server.Tests.Mqtt.Identity;

public sealed class DeviceCommandsTests
{
    private static async Task<(int Code, string Output, string Error)> Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = await DevicesCli.RunAsync(["devices", .. args], output, error);
        return (code, output.ToString(), error.ToString());
    }

    private static async Task<SecretCheck> Verify(string dataDirectory, string id, string secret)
    {
        await using var db = MqttDatabase.Open(dataDirectory);
        return await new SqliteDeviceRegistry(db, TimeProvider.System).VerifySecretAsync(id, Encoding.UTF8.GetBytes(secret), CancellationToken.None);
    }

    [Fact]
    public async Task Add_List_SetSecret_Remove()
    {
        using var dir = new TempDataDirectory();
        var data = $"--Relay:DataDirectory={dir.Path}";

        var add = await Run("add", "d1", "--secret", "s1", data);
        Assert.Equal((0, "added device d1\n"), (add.Code, add.Output));
        Assert.Equal(SecretCheck.Match, await Verify(dir.Path, "d1", "s1"));

        var generated = await Run("add", "d2", data);
        Assert.Equal(0, generated.Code);
        var secret = generated.Output.Trim().Split(' ')[^1];
        Assert.Equal(43, secret.Length);
        Assert.Equal(SecretCheck.Match, await Verify(dir.Path, "d2", secret));

        Assert.Equal(1, (await Run("add", "d1", data)).Code);
        var list = await Run("list", data);
        Assert.Equal(0, list.Code);
        Assert.Equal(["d1", "d2"], list.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')[0]));
        Assert.DoesNotContain("s1", list.Output, StringComparison.Ordinal);

        var rotate = await Run("set-secret", "d1", data);
        Assert.Equal(0, rotate.Code);
        var newSecret = rotate.Output.Trim().Split(' ')[^1];
        Assert.Equal(SecretCheck.Mismatch, await Verify(dir.Path, "d1", "s1"));
        Assert.Equal(SecretCheck.Match, await Verify(dir.Path, "d1", newSecret));
        Assert.Equal(1, (await Run("set-secret", "nobody", data)).Code);

        Assert.Equal(0, (await Run("remove", "d1", data)).Code);
        Assert.Equal(1, (await Run("remove", "d1", data)).Code);
        Assert.Equal(SecretCheck.UnknownDevice, await Verify(dir.Path, "d1", newSecret));
    }

    [Theory]
    [InlineData()]
    [InlineData("frobnicate")]
    [InlineData("add")]
    [InlineData("add", "bad/id")]
    [InlineData("list", "extra")]
    public async Task BadUsage_Exits2(params string[] args)
    {
        using var dir = new TempDataDirectory();
        var result = await Run([.. args, $"--Relay:DataDirectory={dir.Path}"]);
        Assert.Equal(2, result.Code);
        Assert.NotEmpty(result.Error);
        Assert.False(File.Exists(Path.Combine(dir.Path, MqttDatabase.FileName)));
    }

    [Fact]
    public async Task TheRelayExecutable_RunsTheSubcommand_AndExitsWithoutStartingTheServer()
    {
        using var dir = new TempDataDirectory();
        var relay = Path.Combine(AppContext.BaseDirectory, "Relay.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { relay, "devices", "add", "cli-device", "--secret", "cli-secret", $"--Relay:DataDirectory={dir.Path}" })
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        Assert.True(process.ExitCode == 0, await stderr);
        Assert.Equal("added device cli-device\n", await stdout);
        Assert.Equal(SecretCheck.Match, await Verify(dir.Path, "cli-device", "cli-secret"));
    }

    [Fact]
    public async Task ConfiguredDevices_AreUpserted_AndAChangedSecretRotates()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, TimeProvider.System, iterations: 1000);
        var options = new MqttOptions();
        options.Devices.Add(new MqttDeviceOptions { Id = "cfg1", Secret = "a" });
        await MqttDeviceProvisioning.ProvisionConfiguredDevicesAsync(registry, options);
        var hash = StoredHash(db, "cfg1");

        await MqttDeviceProvisioning.ProvisionConfiguredDevicesAsync(registry, options);
        Assert.Equal(hash, StoredHash(db, "cfg1")); // unchanged secret: not re-hashed

        options.Devices[0].Secret = "b";
        await MqttDeviceProvisioning.ProvisionConfiguredDevicesAsync(registry, options);
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("cfg1", "b"u8.ToArray(), CancellationToken.None));
        Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("cfg1", "a"u8.ToArray(), CancellationToken.None));

        options.Devices.Add(new MqttDeviceOptions { Id = "bad id", Secret = "x" });
        var error = await Assert.ThrowsAsync<RelayConfigurationException>(() => MqttDeviceProvisioning.ProvisionConfiguredDevicesAsync(registry, options));
        Assert.Contains("Relay:Mqtt:Devices:1:Id", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AddSqlite_ReplacesEarlierRegistrations_AndDisposingTheContainerFlushesAndCloses()
    {
        using var dir = new TempDataDirectory();
        var services = new ServiceCollection();
        services.AddSingleton<IMqttSessionStore>(_ => throw new InvalidOperationException("the in-memory store should have been replaced"));
        var options = new MqttOptions();
        options.Acl.Add(new MqttAclRuleOptions { Topic = "lab/#" });
        services.AddSingleton(Options.Create(options));
        services.AddSingleton(new RelayDataDirectory(Options.Create(new RelayOptions { DataDirectory = dir.Path })));
        MqttPersistence.AddSqlite(services);
        await using (var provider = services.BuildServiceProvider())
        {
            Assert.IsType<SqliteMqttSessionStore>(provider.GetRequiredService<IMqttSessionStore>());
            Assert.IsType<SqliteMqttRetainedStore>(provider.GetRequiredService<IMqttRetainedStore>());
            Assert.IsType<SqliteDeviceRegistry>(provider.GetRequiredService<IDeviceRegistry>());
            Assert.IsType<MqttAuthenticator>(provider.GetRequiredService<IMqttAuthenticator>());
            var authorizer = Assert.IsType<MqttAclAuthorizer>(provider.GetRequiredService<IMqttAuthorizer>());
            Assert.True(authorizer.CanSubscribe(new MqttIdentity(MqttPrincipalKind.Anonymous, "", []), "c", "lab/+"));
            Assert.Same(provider.GetRequiredService<IDeviceRegistry>(), provider.GetRequiredService<IDeviceRegistry>());
            Assert.NotNull(provider.GetRequiredService<MqttIdentityMetrics>());
            var store = provider.GetRequiredService<IMqttSessionStore>();
            Assert.Empty(await store.LoadAllAsync(CancellationToken.None)); // leaves a pooled reader open until disposal
            _ = store.UpsertSessionAsync("queued-at-shutdown", 60, null, null, CancellationToken.None); // not awaited: disposal must still commit it
        }

        // Closed, readers included (SQLite removes the WAL only when the last connection closes), and what was queued is there.
        var moved = Path.Combine(dir.Path, "moved");
        Directory.CreateDirectory(moved);
        File.Move(Path.Combine(dir.Path, MqttDatabase.FileName), Path.Combine(moved, MqttDatabase.FileName));
        Assert.False(File.Exists(Path.Combine(dir.Path, MqttDatabase.FileName + "-wal")), "a clean close checkpoints and removes the WAL");
        await using var db = MqttDatabase.Open(moved);
        Assert.Equal("queued-at-shutdown", Assert.Single(await new SqliteMqttSessionStore(db).LoadAllAsync(CancellationToken.None)).ClientId);
    }

    [Fact]
    public void AddRelayMqtt_RejectsBadConfiguration_BeforeAnythingIsOpened()
    {
        using var dir = new TempDataDirectory();
        foreach (var (key, value) in new[] { ("Relay:Mqtt:Acl:0:Topic", "a/#/b"), ("Relay:Mqtt:AuthHook:Url", "not a url") })
        {
            var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Relay:DataDirectory"] = dir.Path,
                [key] = value,
            }).Build();
            using var provider = new ServiceCollection().AddLogging().AddRelayMqtt(configuration).BuildServiceProvider();
            var error = Assert.Throws<RelayConfigurationException>(provider.ValidateRelayConfiguration);
            Assert.Contains(key[..key.LastIndexOf(':')], error.Message, StringComparison.Ordinal);
        }

        Assert.False(File.Exists(Path.Combine(dir.Path, MqttDatabase.FileName)));
    }

    private static string StoredHash(MqttDatabase db, string id)
    {
        using var connection = db.OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT secret_hash FROM devices WHERE id = $i";
        command.Parameters.AddWithValue("$i", id);
        return (string)command.ExecuteScalar()!;
    }
}

using Microsoft.Extensions.Configuration;
using Relay.Server.Hosting;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Mqtt;

namespace Relay.Server.Cli;

/// <summary>
/// <c>relay devices add|list|remove|set-secret</c>: provisioning without starting the server. Reads
/// <c>Relay:DataDirectory</c> as the server does (appsettings.json, <c>Relay__*</c> environment
/// variables, <c>--Relay:DataDirectory=...</c>) and opens <c>mqtt.db</c> there.
/// </summary>
internal static class DevicesCli
{
    private const string Usage = """
        usage: relay devices add <id> [--secret S]     register a device (prints a generated secret once when none is given)
               relay devices list                      list registered devices
               relay devices remove <id>               delete a device
               relay devices set-secret <id> [--secret S]  replace a device's secret
        options: --Relay:DataDirectory=DIR (default ./data)
        """;

    /// <summary>Runs the command in <paramref name="args"/> (args[0] is "devices"); returns the exit code.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var positional = new List<string>();
        var configurationArgs = new List<string>();
        string? secret = null;
        for (var i = 1; i < args.Length; i++)
        {
            if (args[i] == "--secret" && i + 1 < args.Length)
            {
                secret = args[++i];
            }
            else if (args[i].StartsWith("--secret=", StringComparison.Ordinal))
            {
                secret = args[i]["--secret=".Length..];
            }
            else if (args[i].StartsWith("--", StringComparison.Ordinal))
            {
                configurationArgs.Add(args[i]);
            }
            else
            {
                positional.Add(args[i]);
            }
        }

        var verb = positional.Count > 0 ? positional[0] : null;
        var needsId = verb is "add" or "remove" or "set-secret";
        if (verb is null || (needsId ? positional.Count != 2 : verb != "list" || positional.Count != 1))
        {
            await error.WriteLineAsync(Usage).ConfigureAwait(false);
            return 2;
        }

        var id = needsId ? positional[1] : string.Empty;
        if (needsId && !DeviceId.IsValid(id))
        {
            await error.WriteLineAsync($"relay: device id '{id}' must match [A-Za-z0-9._-]{{1,{DeviceId.MaxLength}}}").ConfigureAwait(false);
            return 2;
        }

        var configuration = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
            .AddEnvironmentVariables()
            .AddCommandLine([.. configurationArgs])
            .Build();
        var dataDirectory = Path.GetFullPath(configuration["Relay:DataDirectory"] is { Length: > 0 } configured ? configured : "./data");
        MqttDatabase database;
        try
        {
            database = MqttDatabase.Open(dataDirectory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or Microsoft.Data.Sqlite.SqliteException)
        {
            await error.WriteLineAsync($"relay: Relay:DataDirectory: cannot open '{Path.Combine(dataDirectory, MqttDatabase.FileName)}' ({e.Message})").ConfigureAwait(false);
            return 3;
        }

        await using (database.ConfigureAwait(false))
        {
            var registry = new SqliteDeviceRegistry(database, TimeProvider.System);
            switch (verb)
            {
                case "add":
                {
                    var generated = secret is null;
                    secret ??= DeviceSecretHasher.Generate();
                    if (!await registry.AddAsync(id, secret, [], cancellationToken).ConfigureAwait(false))
                    {
                        await error.WriteLineAsync($"relay: device '{id}' already exists (use set-secret to change its secret)").ConfigureAwait(false);
                        return 1;
                    }

                    await output.WriteLineAsync(generated ? $"added device {id}; secret (shown once): {secret}" : $"added device {id}").ConfigureAwait(false);
                    return 0;
                }

                case "set-secret":
                {
                    var generated = secret is null;
                    secret ??= DeviceSecretHasher.Generate();
                    if (!await registry.SetSecretAsync(id, secret, cancellationToken).ConfigureAwait(false))
                    {
                        await error.WriteLineAsync($"relay: no device '{id}'").ConfigureAwait(false);
                        return 1;
                    }

                    await output.WriteLineAsync(generated ? $"new secret for device {id} (shown once): {secret}" : $"secret of device {id} replaced").ConfigureAwait(false);
                    return 0;
                }

                case "remove":
                    if (!await registry.RemoveAsync(id, cancellationToken).ConfigureAwait(false))
                    {
                        await error.WriteLineAsync($"relay: no device '{id}'").ConfigureAwait(false);
                        return 1;
                    }

                    await output.WriteLineAsync($"removed device {id}").ConfigureAwait(false);
                    return 0;

                default:
                    foreach (var device in await registry.ListAsync(cancellationToken).ConfigureAwait(false))
                    {
                        var grants = string.Join(' ', device.ExtraGrants.Select(static g => g.Actions switch
                        {
                            MqttAction.Publish => "pub:" + g.TopicFilter,
                            MqttAction.Subscribe => "sub:" + g.TopicFilter,
                            _ => g.TopicFilter,
                        }));
                        await output.WriteLineAsync($"{device.Id}\t{device.CreatedAt:u}{(device.Disabled ? "\tdisabled" : string.Empty)}{(grants.Length > 0 ? "\t" + grants : string.Empty)}").ConfigureAwait(false);
                    }

                    return 0;
            }
        }
    }

}

using System.CommandLine;
using Microsoft.Extensions.Configuration;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;

namespace Relay.Server.Cli;

/// <summary>
/// <c>relay devices add|list|remove|set-secret</c>: provisioning without starting the server. Reads
/// <c>Relay:DataDirectory</c> as the server does (appsettings.json, <c>Relay__*</c> environment
/// variables, <c>--Relay:DataDirectory=...</c>) and opens <c>mqtt.db</c> there. Exit codes: 0 ok, 1 no such
/// device or already there, 2 usage, 3 the data directory cannot be opened.
/// </summary>
internal static class DevicesCli
{
    /// <summary>What a usage mistake prints.</summary>
    public const string Usage = """
        usage: relay devices add <id> [--secret S]     register a device (prints a generated secret once when none is given)
               relay devices list                      list registered devices
               relay devices remove <id>               delete a device
               relay devices set-secret <id> [--secret S]  replace a device's secret
        options: --Relay:DataDirectory=DIR (default ./data)
        """;

    private enum Verb
    {
        Add,
        List,
        Remove,
        SetSecret,
    }

    /// <summary>The <c>devices</c> command; settings such as <c>--Relay:DataDirectory=DIR</c> may follow any verb.</summary>
    public static Command CreateCommand()
    {
        var devices = new Command("devices", "Provision MQTT devices in the data directory, without starting the server (--Relay:DataDirectory=DIR, default ./data).")
        {
            CreateVerb(Verb.Add, "add", "Register a device; prints a generated secret once when --secret is not given."),
            CreateVerb(Verb.List, "list", "List registered devices."),
            CreateVerb(Verb.Remove, "remove", "Delete a device."),
            CreateVerb(Verb.SetSecret, "set-secret", "Replace a device's secret; prints a generated one once when --secret is not given."),
        };
        devices.TreatUnmatchedTokensAsErrors = false;
        return devices;
    }

    /// <summary>Runs the command in <paramref name="args"/> (args[0] is "devices"); returns the exit code.</summary>
    public static Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default) =>
        CommandLineRunner.RunAsync(new RootCommand { CreateCommand() }, args, output, error, Usage, cancellationToken);

    private static Command CreateVerb(Verb verb, string name, string description)
    {
        var command = new Command(name, description) { TreatUnmatchedTokensAsErrors = false };
        Argument<string>? id = null;
        Option<string>? secret = null;
        if (verb != Verb.List)
        {
            id = new Argument<string>("id") { Description = $"Device id = MQTT client id = username ([A-Za-z0-9._-], at most {DeviceId.MaxLength} characters)." };
            command.Arguments.Add(id);
        }

        if (verb is Verb.Add or Verb.SetSecret)
        {
            secret = new Option<string>("--secret") { Description = "The secret to set (default: a generated one, printed once)." };
            command.Options.Add(secret);
        }

        command.SetAction((parsed, cancellationToken) => RunAsync(verb, id is null ? string.Empty : parsed.GetRequiredValue(id), secret is null ? null : parsed.GetValue(secret), parsed, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(Verb verb, string id, string? secret, ParseResult parsed, CancellationToken cancellationToken)
    {
        var output = parsed.InvocationConfiguration.Output;
        var error = parsed.InvocationConfiguration.Error;
        if (CommandLineRunner.ConfigurationArguments(parsed) is not { } configurationArgs)
        {
            await error.WriteLineAsync($"relay: unexpected '{parsed.UnmatchedTokens.First(static t => !t.StartsWith("--", StringComparison.Ordinal))}'").ConfigureAwait(false);
            await error.WriteLineAsync(Usage).ConfigureAwait(false);
            return 2;
        }

        if (verb != Verb.List && !DeviceId.IsValid(id))
        {
            await error.WriteLineAsync($"relay: device id '{id}' must match [A-Za-z0-9._-]{{1,{DeviceId.MaxLength}}}").ConfigureAwait(false);
            return 2;
        }

        var configuration = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
            .AddEnvironmentVariables()
            .AddCommandLine(configurationArgs)
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
            return verb switch
            {
                Verb.Add => await AddAsync(registry, id, secret, output, error, cancellationToken).ConfigureAwait(false),
                Verb.SetSecret => await SetSecretAsync(registry, id, secret, output, error, cancellationToken).ConfigureAwait(false),
                Verb.Remove => await RemoveAsync(registry, id, output, error, cancellationToken).ConfigureAwait(false),
                _ => await ListAsync(registry, output, cancellationToken).ConfigureAwait(false),
            };
        }
    }

    private static async Task<int> AddAsync(SqliteDeviceRegistry registry, string id, string? secret, TextWriter output, TextWriter error, CancellationToken cancellationToken)
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

    private static async Task<int> SetSecretAsync(SqliteDeviceRegistry registry, string id, string? secret, TextWriter output, TextWriter error, CancellationToken cancellationToken)
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

    private static async Task<int> RemoveAsync(SqliteDeviceRegistry registry, string id, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        if (!await registry.RemoveAsync(id, cancellationToken).ConfigureAwait(false))
        {
            await error.WriteLineAsync($"relay: no device '{id}'").ConfigureAwait(false);
            return 1;
        }

        await output.WriteLineAsync($"removed device {id}").ConfigureAwait(false);
        return 0;
    }

    private static async Task<int> ListAsync(SqliteDeviceRegistry registry, TextWriter output, CancellationToken cancellationToken)
    {
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

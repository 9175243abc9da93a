using Relay.Server;
using Relay.Server.Hosting;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Cli;

// Provisioning subcommands run against the data directory and exit; they never start the server.
if (args.Length > 0 && args[0] == "devices")
{
    return await DevicesCli.RunAsync(args, Console.Out, Console.Error).ConfigureAwait(false);
}

// API subcommands call a running server over HTTP (Relay:Http:Port) with a bearer token.
if (args.Length > 0 && args[0] == "api")
{
    return await ApiCli.RunAsync(args, Console.Out, Console.Error).ConfigureAwait(false);
}

try
{
    await using var app = RelayHost.Build(args);
    await app.RunAsync().ConfigureAwait(false);
    return 0;
}
catch (RelayConfigurationException e)
{
    await Console.Error.WriteLineAsync($"relay: {e.Message}").ConfigureAwait(false);
    return 2;
}
catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException)
{
    // Bind failures: Kestrel's "address already in use", or our UDP listener's explanation.
    await Console.Error.WriteLineAsync($"relay: cannot start: {e.Message}").ConfigureAwait(false);
    return 3;
}

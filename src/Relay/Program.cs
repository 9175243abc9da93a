using System.CommandLine;
using Relay.Server;
using Relay.Server.Cli;
using Relay.Server.Hosting;

// "relay devices ..." opens the data directory and exits; "relay api ..." calls a running server over HTTP;
// anything else starts the server, the remaining arguments being configuration (--Relay:Section:Key=value).
var root = new RootCommand("Relay: STUN/TURN, an MQTT device plane, a push API and peer rendezvous in one server. Without a subcommand it runs the server; settings are given as --Relay:Section:Key=value (see README.md).")
{
    DevicesCli.CreateCommand(),
    ApiCli.CreateCommand(),
};
root.TreatUnmatchedTokensAsErrors = false;
root.SetAction((_, _) => RunServerAsync(args));
var usage = args.FirstOrDefault() switch
{
    "devices" => DevicesCli.Usage,
    "api" => ApiCli.Usage,
    _ => "usage: relay [devices ... | api ... | --Relay:Section:Key=value ...]  (relay --help lists the commands)",
};
return await CommandLineRunner.RunAsync(root, args, Console.Out, Console.Error, usage, CancellationToken.None).ConfigureAwait(false);

// Exit codes: 0 stopped cleanly, 2 bad configuration (every problem listed, naming its key), 3 a port cannot be bound.
static async Task<int> RunServerAsync(string[] args)
{
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
}

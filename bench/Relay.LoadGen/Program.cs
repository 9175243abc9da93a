using System.Globalization;
using Relay.LoadGen;

if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    Console.WriteLine(LoadOptions.Usage);
    Console.WriteLine(TurnLoadOptions.Usage);
    Console.WriteLine(MqttLoadOptions.Usage);
    Console.WriteLine(PushLoadOptions.Usage);
    Console.WriteLine(SoakOptions.Usage);
    return args.Length == 0 ? 2 : 0;
}

var command = args[0];
if (command == "turn")
{
    if (!TurnLoadOptions.TryParse(args, 1, out var turnOptions, out var turnError))
    {
        Console.Error.WriteLine($"error: {turnError}");
        Console.Error.WriteLine(TurnLoadOptions.Usage);
        return 2;
    }

    return TurnLoad.Run(turnOptions!);
}

if (command is "mqtt-idle" or "mqtt-pubsub")
{
    if (!MqttLoadOptions.TryParse(args, 1, out var mqttOptions, out var mqttError))
    {
        Console.Error.WriteLine($"error: {mqttError}");
        Console.Error.WriteLine(MqttLoadOptions.Usage);
        return 2;
    }

    return command == "mqtt-idle" ? await MqttIdleLoad.RunAsync(mqttOptions!) : await MqttPubSubLoad.RunAsync(mqttOptions!);
}

if (command == "push")
{
    if (!PushLoadOptions.TryParse(args, 1, out var pushOptions, out var pushError))
    {
        Console.Error.WriteLine($"error: {pushError}");
        Console.Error.WriteLine(PushLoadOptions.Usage);
        return 2;
    }

    return await PushLoad.RunAsync(pushOptions!);
}

if (command == "soak-judge")
{
    // Judges a kept soak CSV again: soak-judge CSV MINUTES WARMUP-MINUTES SAMPLE-SECONDS (docs/benchmarks.md, "Soak").
    if (args.Length != 5)
    {
        Console.Error.WriteLine("usage: Relay.LoadGen soak-judge CSV MINUTES WARMUP-MINUTES SAMPLE-SECONDS");
        return 2;
    }

    return SoakRun.Judge(args[1], double.Parse(args[2], CultureInfo.InvariantCulture), double.Parse(args[3], CultureInfo.InvariantCulture), double.Parse(args[4], CultureInfo.InvariantCulture));
}

if (command == "soak")
{
    if (!SoakOptions.TryParse(args, 1, out var soakOptions, out var soakError))
    {
        Console.Error.WriteLine($"error: {soakError}");
        Console.Error.WriteLine(SoakOptions.Usage);
        return 2;
    }

    return await SoakRun.RunAsync(soakOptions!);
}

if (command is not ("stun" or "probe"))
{
    Console.Error.WriteLine($"unknown command '{command}'");
    Console.Error.WriteLine(LoadOptions.Usage);
    return 2;
}

if (!LoadOptions.TryParse(args, 1, out var options, out var waitSeconds, out var error))
{
    Console.Error.WriteLine($"error: {error}");
    Console.Error.WriteLine(LoadOptions.Usage);
    return 2;
}

if (options!.InlineCompletions)
{
    // Running socket continuations directly on the epoll threads avoids a thread-pool hop per
    // datagram, which otherwise costs the generator a large share of a core. It is read when the
    // socket engine first starts, so it must be set before any socket is used.
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
}

return command == "probe"
    ? await Probe.RunAsync(options, waitSeconds)
    : await LoadRun.RunAsync(options);

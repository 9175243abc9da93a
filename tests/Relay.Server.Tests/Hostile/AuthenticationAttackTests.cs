using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Tests.Mqtt.Engine;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// CONNECT as an attacker tries it (reviews H2, M1, M2): nothing in the answer tells whether a device id
/// exists; a pool full of slow verifications answers "server busy" at once instead of stalling everyone;
/// concurrent guesses from one address cannot run past its failure budget.
/// </summary>
public sealed class AuthenticationAttackTests
{
    private const string ChosenSecret = "a-person-chose-this";

    private static readonly string[] Devices =
    [
        "Relay:Mqtt:AllowAnonymous=false",
        "Relay:Mqtt:Devices:0:Id=known",
        $"Relay:Mqtt:Devices:0:Secret={ChosenSecret}",
    ];

    private static Action<MqttConnectOptionsBuilder> Credentials(string user, string password) => o =>
    {
        o.Options.Username = user;
        o.Options.Password = Encoding.UTF8.GetBytes(password);
        o.Options.HasPassword = true;
    };

    [Theory]
    [InlineData(MqttProtocolVersion.V500)]
    [InlineData(MqttProtocolVersion.V311)]
    public async Task UnknownDevice_WrongSecret_ForeignClientId_AllAnswerAlike_M2(MqttProtocolVersion version)
    {
        await using var server = await EngineTestServer.StartAsync(Devices);
        var answers = new List<string>();
        foreach (var (clientId, user, secret) in new[] { ("nobody", "nobody", "guess"), ("known", "known", "guess"), ("other-id", "known", "guess") })
        {
            var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, clientId, version, Credentials(user, secret), expectSuccess: false);
            await using var c = client;
            var ack = connAck.ConnAck();
            answers.Add($"{ack.ReasonCode:x2} {(ack.Properties.HasReasonString ? Encoding.UTF8.GetString(ack.Properties.ReasonString) : "-")} {ack.SessionPresent}");
        }

        Assert.Single(answers.Distinct());
        Assert.StartsWith(version == MqttProtocolVersion.V500 ? "86 bad user name or password" : "04 -", answers[0], StringComparison.Ordinal);

        // With the right secret the device's own rules speak: its client id must be its id (0x87).
        var (wrongId, wrongIdAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "other-id", version, Credentials("known", ChosenSecret), expectSuccess: false);
        await using var w = wrongId;
        Assert.Equal(version == MqttProtocolVersion.V500 ? (byte)0x87 : (byte)0x05, wrongIdAck.ConnAck().ReasonCode);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V500, 0x89)]
    [InlineData(MqttProtocolVersion.V311, 0x03)]
    public async Task AFullSlowHashPool_AnswersServerBusy_AndTheDeviceGetsInOnceItFrees_H2(MqttProtocolVersion version, byte busy)
    {
        await using var server = await EngineTestServer.StartAsync([.. Devices, "Relay:Mqtt:SlowHashConcurrency=1", "Relay:Mqtt:SlowHashMaxWaiting=0"]);
        var pool = server.Services.GetRequiredService<SlowHashPool>();

        // Occupy the only slot, as a storm of chosen-secret devices would.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var holding = pool.RunAsync(0, _ =>
        {
            entered.SetResult();
            gate.Task.Wait();
            return true;
        }, CancellationToken.None).AsTask();
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var (refused, refusedAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "known", version, Credentials("known", ChosenSecret), expectSuccess: false);
        await using (refused)
        {
            Assert.Equal(busy, refusedAck.ConnAck().ReasonCode);
        }

        Assert.Equal(1, server.MqttMetrics().AuthOutcomes(MqttAuthOutcome.Busy));
        Assert.Equal(1, pool.Refused);

        gate.SetResult();
        Assert.True(await holding.WaitAsync(TimeSpan.FromSeconds(30)));
        var (admitted, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "known", version, Credentials("known", ChosenSecret));
        await admitted.DisposeAsync();

        // A busy answer did not spend the address's failure budget.
        var limiter = server.Services.GetRequiredService<IMqttAuthenticator>() is MqttAuthenticator a ? a.RateLimiter : null;
        Assert.NotNull(limiter);
        Assert.False(limiter.IsLimited(System.Net.IPAddress.Loopback));
    }

    [Fact]
    public async Task ConcurrentGuesses_FromOneAddress_StopAtItsBudget_M1()
    {
        await using var server = await EngineTestServer.StartAsync([.. Devices, "Relay:Mqtt:AuthFailuresPerMinutePerIp=5"]);
        var attempts = Enumerable.Range(0, 40).Select(async i =>
        {
            var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "known", MqttProtocolVersion.V500, Credentials("known", "guess-" + i), expectSuccess: false);
            await using var c = client;
            return connAck.ConnAck().ReasonCode;
        });
        var codes = await Task.WhenAll(attempts);

        // Five guesses were checked, however many raced; the rest were refused unchecked (0x9F).
        Assert.Equal(5, codes.Count(static c => c == 0x86));
        Assert.Equal(35, codes.Count(static c => c == 0x9F));
        var registry = (Relay.Server.Mqtt.Storage.SqliteDeviceRegistry)server.Services.GetRequiredService<IDeviceRegistry>();
        Assert.True(registry.Pbkdf2Runs <= 6, $"{registry.Pbkdf2Runs} PBKDF2 runs"); // the five guesses, plus the start-up check of the configured secret
    }
}

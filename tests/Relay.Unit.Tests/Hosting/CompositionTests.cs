using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Devices;
using Relay.Server.Hosting;
using Relay.Server.Rendezvous;

namespace Relay.Server.Tests.Hosting;

public sealed class CompositionTests
{
    private sealed class Presence(string name) : IDevicePresence
    {
        public string Name => name;

        public DevicePresence Get(string deviceId) => new(deviceId, Online: false, LastSeen: null, RemoteEndPoint: null, ProtocolVersion: 0, ConnectedSince: null);

        public bool IsOnline(string deviceId) => false;
    }

    [Fact]
    public void Decorate_WrapsTheOneRegistration_AndKeepsItsLifetime()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IDevicePresence>(_ => new Presence("broker"));
        services.Decorate<IDevicePresence>(static (_, inner) => new Presence("decorated " + ((Presence)inner).Name));
        using var provider = services.BuildServiceProvider();
        var presence = Assert.IsType<Presence>(provider.GetRequiredService<IDevicePresence>());
        Assert.Equal("decorated broker", presence.Name);
        Assert.Same(presence, provider.GetRequiredService<IDevicePresence>());
        Assert.Single(services, static d => d.ServiceType == typeof(IDevicePresence));
    }

    [Fact]
    public void Decorate_BeforeTheServiceIsRegistered_FailsAtOnce()
    {
        var error = Assert.Throws<InvalidOperationException>(() => new ServiceCollection().Decorate<IDevicePresence>(static (_, inner) => inner));
        Assert.Contains("not registered yet", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(true, true, true)]
    [InlineData(false, true, false)]
    [InlineData(true, false, false)]
    public void Rendezvous_DecoratesTheBrokersPresence_OnlyWhenItAndMqttAreOn(bool rendezvous, bool mqtt, bool decorated)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Relay:Rendezvous:Enabled"] = rendezvous ? "true" : "false",
            ["Relay:Mqtt:Enabled"] = mqtt ? "True" : "False",
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IDevicePresence>(_ => new Presence("broker"));
        services.AddRelayRendezvous(configuration);
        using var provider = services.BuildServiceProvider();
        Assert.Equal(decorated, services.Any(static d => d.ServiceType == typeof(RendezvousService)));
        Assert.Single(services, static d => d.ServiceType == typeof(IDevicePresence));
        Assert.Equal(decorated, provider.GetRequiredService<IDevicePresence>() is RendezvousPresence);
    }
}

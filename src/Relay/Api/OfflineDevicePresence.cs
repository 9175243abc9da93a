using Relay.Server.Devices;
using Relay.Server.Push;

namespace Relay.Server.Api;

/// <summary>
/// FALLBACK ONLY: answers "offline, never seen" for every device. The API uses it when no real
/// <see cref="IDevicePresence"/> (the broker's, from the command-lifecycle work) is registered, so the
/// device endpoints work and are testable on their own; it is never registered in the container, so
/// it can never shadow the real one.
/// </summary>
internal sealed class OfflineDevicePresence : IDevicePresence
{
    public static readonly OfflineDevicePresence Instance = new();

    public DevicePresence Get(string deviceId) => new(deviceId, Online: false, LastSeen: null, RemoteEndPoint: null, ProtocolVersion: 0, ConnectedSince: null);

    public bool IsOnline(string deviceId) => false;

    /// <summary>The registered presence, or this fallback.</summary>
    public static IDevicePresence Resolve(IServiceProvider services) => services.GetService<IDevicePresence>() ?? Instance;
}

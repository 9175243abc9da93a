using System.Collections.Concurrent;
using System.Net;
using Relay.Server.Devices;
using Relay.Server.Mqtt;
using Relay.Server.Push;

namespace Relay.Server.Rendezvous;

/// <summary>
/// Each device's last reported NAT classification (already checked against NatKinds), in memory like the
/// rest of presence. Bounded: past <see cref="MaxDevices"/> an arbitrary half is forgotten (those devices
/// show no NAT until they report again, which DeviceClient does on every connect).
/// </summary>
internal sealed class NatReports
{
    public const int MaxDevices = 200_000;

    private readonly ConcurrentDictionary<string, string> _reports = new(StringComparer.Ordinal);

    public void Set(string device, string nat)
    {
        if (_reports.Count >= MaxDevices && !_reports.ContainsKey(device))
        {
            foreach (var key in _reports.Keys.Take(MaxDevices / 2).ToArray())
            {
                _reports.TryRemove(key, out _);
            }
        }

        _reports[device] = nat;
    }

    public string? Get(string device) => _reports.TryGetValue(device, out var nat) ? nat : null;
}

/// <summary>The broker's presence, with the device's last NAT report (GET /v1/devices/{id}: <c>"nat"</c>).</summary>
internal sealed class RendezvousPresence(IDevicePresence broker, NatReports nats) : IDevicePresence
{
    public DevicePresence Get(string deviceId)
    {
        var presence = broker.Get(deviceId);
        return nats.Get(deviceId) is { } nat ? presence with { Nat = nat } : presence;
    }

    public bool IsOnline(string deviceId) => broker.IsOnline(deviceId);
}

/// <summary>Where a device's MQTT connection arrived: the host to name in its TURN URIs.</summary>
internal static class LocalAddress
{
    // A link-local address's zone (%eth0) means nothing to the device, and RFC 7065 URIs have no place for it.
    public static string? HostOf(IPEndPoint? local) => local?.Address is { } address && !address.Equals(IPAddress.Any) && !address.Equals(IPAddress.IPv6Any)
        ? (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && address.ScopeId != 0 ? new IPAddress(address.GetAddressBytes()) : address).ToString()
        : null;
}

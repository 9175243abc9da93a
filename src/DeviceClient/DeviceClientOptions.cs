using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;

namespace Relay.DeviceClient;

/// <summary>Which MQTT version the client speaks.</summary>
public enum MqttProtocolPreference
{
    /// <summary>
    /// Try MQTT 5.0; fall back to 3.1.1 when the server refuses 5.0 (a 3.1.1 CONNACK 0x01, a 5.0 CONNACK 0x84,
    /// or the server closing on the v5 CONNECT). The version that worked is remembered for later connects.
    /// </summary>
    Auto,

    /// <summary>MQTT 5.0 only.</summary>
    V5,

    /// <summary>MQTT 3.1.1 only.</summary>
    V311,
}

/// <summary>What the offline queue does when it is full.</summary>
public enum OfflineQueueDropPolicy
{
    /// <summary>Drop the oldest queued message to make room for the new one.</summary>
    DropOldest,

    /// <summary>Keep the queue as it is and drop the new message.</summary>
    DropNewest,
}

/// <summary>The client's connection state.</summary>
public enum DeviceConnectionState
{
    /// <summary>Not connected (not started yet, or waiting to reconnect).</summary>
    Disconnected,

    /// <summary>Opening the transport and waiting for CONNACK.</summary>
    Connecting,

    /// <summary>CONNACK accepted; commands arrive.</summary>
    Connected,

    /// <summary><see cref="RelayDeviceClient.StopAsync"/> ran; the client does not reconnect.</summary>
    Stopped,
}

/// <summary>Settings of a <see cref="RelayDeviceClient"/>.</summary>
public sealed class DeviceClientOptions
{
    /// <summary>The server: <c>mqtt://host:1883</c>, <c>mqtts://host:8883</c>, <c>ws://host:8080/mqtt</c> or <c>wss://host/mqtt</c>.</summary>
    public required Uri Server { get; set; }

    /// <summary>The device id: MQTT client identifier and default user name.</summary>
    public required string DeviceId { get; set; }

    /// <summary>MQTT user name; null means <see cref="DeviceId"/>.</summary>
    public string? Username { get; set; }

    /// <summary>MQTT password (the device secret); null sends none (e.g. with a client certificate).</summary>
    public string? Secret { get; set; }

    /// <summary>MQTT version; see <see cref="MqttProtocolPreference.Auto"/>.</summary>
    public MqttProtocolPreference Protocol { get; set; } = MqttProtocolPreference.Auto;

    /// <summary>Client certificates for TLS client authentication (mqtts and wss).</summary>
    public X509CertificateCollection? ClientCertificates { get; set; }

    /// <summary>Validates the server's certificate; null uses the system's validation.</summary>
    public RemoteCertificateValidationCallback? ServerCertificateValidation { get; set; }

    /// <summary>Interval between PINGREQs; also sent to the server as the MQTT Keep Alive.</summary>
    public TimeSpan KeepAlive { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Time allowed for TCP, TLS, WebSocket and CONNACK together.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Time allowed for a SUBACK, PUBACK or PINGRESP.</summary>
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The largest packet accepted from the server (fixed header included); larger ones close the connection.</summary>
    public int MaxPacketSize { get; set; } = 256 * 1024;

    /// <summary>MQTT 5 Session Expiry Interval: how long the server keeps the session (and queues commands) while offline.</summary>
    public TimeSpan SessionExpiry { get; set; } = TimeSpan.FromDays(1);

    /// <summary>Reconnect backoff.</summary>
    public ReconnectOptions Reconnect { get; } = new();

    /// <summary>The queue that holds publishes while offline.</summary>
    public OfflineQueueOptions OfflineQueue { get; } = new();

    /// <summary>Command execution.</summary>
    public CommandOptions Commands { get; } = new();

    /// <summary>Peer-to-peer sessions (docs/rendezvous.md).</summary>
    public Peers.PeerOptions Peers { get; } = new();

    /// <summary>The clock for every delay, timeout and expiry (tests pass a fake one).</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Where the client logs; null logs nowhere.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>The jitter source: returns a value in [0, 1). Tests make it deterministic.</summary>
    internal Func<double>? Random { get; set; }
}

/// <summary>
/// Reconnect backoff with "full jitter": the delay before attempt n (from 0) is uniformly random in
/// [0, min(<see cref="MaxDelay"/>, <see cref="BaseDelay"/> * 2^n)]. Defaults are the AWS IoT device SDK's.
/// </summary>
public sealed class ReconnectOptions
{
    /// <summary>The cap of the first delay.</summary>
    public TimeSpan BaseDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The largest delay.</summary>
    public TimeSpan MaxDelay { get; set; } = TimeSpan.FromSeconds(32);

    /// <summary>A connection that stayed up this long resets the backoff to the first attempt.</summary>
    public TimeSpan StableConnectionTime { get; set; } = TimeSpan.FromSeconds(20);
}

/// <summary>The offline publish queue.</summary>
public sealed class OfflineQueueOptions
{
    /// <summary>Most messages held; beyond it <see cref="DropPolicy"/> decides.</summary>
    public int Capacity { get; set; } = 1000;

    /// <summary>What to drop when the queue is full.</summary>
    public OfflineQueueDropPolicy DropPolicy { get; set; } = OfflineQueueDropPolicy.DropOldest;

    /// <summary>An append-only journal that keeps the queue across a process restart; null keeps it in memory only.</summary>
    public string? FilePath { get; set; }

    /// <summary>Messages per second sent from the queue after a reconnect (a token bucket holding one token); 0 = unlimited.</summary>
    public double DrainRatePerSecond { get; set; } = 50;
}

/// <summary>Command execution.</summary>
public sealed class CommandOptions
{
    /// <summary>How many answered command ids (and results) are remembered to detect duplicates.</summary>
    public int RememberedResults { get; set; } = 1024;

    /// <summary>A file that keeps the remembered results across a restart; null keeps them in memory only.</summary>
    public string? StateFilePath { get; set; }

    /// <summary>Handlers running at once.</summary>
    public int MaxConcurrentCommands { get; set; } = 4;
}

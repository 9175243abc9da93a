using System.Text;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// Opens one connection: the transport, then CONNECT/CONNACK (§3.1, §3.2) for a persistent session. Under
/// <see cref="MqttProtocolPreference.Auto"/> it asks for 5.0 and falls back to 3.1.1 when the server refuses
/// that level or drops the connection; the version that worked is asked for first from then on.
/// </summary>
/// <remarks>Used by one connect loop at a time, so its state needs no lock.</remarks>
internal sealed class MqttConnector(DeviceClientOptions options, ILogger logger, TimeProvider time, ushort receiveMaximum)
{
    private MqttProtocolVersion? _workingVersion;
    private long _attempts;

    /// <summary>Connection attempts (transport opened or not), fallbacks included.</summary>
    public long Attempts => Interlocked.Read(ref _attempts);

    /// <summary>An accepted connection; throws when the attempt failed (the caller reports it and retries).</summary>
    public async Task<MqttConnection> ConnectAsync(CancellationToken stop)
    {
        var version = _workingVersion ?? (options.Protocol == MqttProtocolPreference.V311 ? MqttProtocolVersion.V311 : MqttProtocolVersion.V500);
        var (connection, outcome) = await TryConnectAsync(version, stop).ConfigureAwait(false);
        if (outcome is ConnectOutcome.UnsupportedVersion or ConnectOutcome.ClosedByServer
            && version == MqttProtocolVersion.V500
            && options.Protocol == MqttProtocolPreference.Auto)
        {
            logger.LogInformation("The server refused MQTT 5.0 ({Outcome}); trying 3.1.1", outcome);
            await connection.DisposeAsync().ConfigureAwait(false);
            (connection, outcome) = await TryConnectAsync(MqttProtocolVersion.V311, stop).ConfigureAwait(false);
        }

        if (outcome != ConnectOutcome.Accepted)
        {
            var code = connection.ConnAckCode;
            await connection.DisposeAsync().ConfigureAwait(false);
            throw outcome == ConnectOutcome.Refused
                ? new IOException($"The server refused the connection: CONNACK 0x{code:X2}.")
                : outcome == ConnectOutcome.ClosedByServer
                    ? new IOException("The server closed the connection before CONNACK.")
                    : new IOException("The server does not support the requested MQTT version.");
        }

        _workingVersion = connection.Version;
        return connection;
    }

    private async Task<(MqttConnection Connection, ConnectOutcome Outcome)> TryConnectAsync(MqttProtocolVersion version, CancellationToken stop)
    {
        Interlocked.Increment(ref _attempts);
        using var timeout = new CancellationTokenSource(options.ConnectTimeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, timeout.Token);
        Stream? stream = null;
        MqttConnection? connection = null;
        try
        {
            stream = await MqttTransport.OpenAsync(options, linked.Token).ConfigureAwait(false);
            connection = new MqttConnection(stream, version, options.MaxPacketSize);
            var v5 = version == MqttProtocolVersion.V500;
            var connect = new MqttConnectOptions
            {
                Version = version,
                ClientId = options.DeviceId,
                CleanStart = false, // a persistent session: the server queues commands while the device is offline
                KeepAliveSeconds = (ushort)Math.Clamp(options.KeepAlive.TotalSeconds, 0, ushort.MaxValue),
                Username = options.Username ?? options.DeviceId,
                Password = options.Secret is null ? default : Encoding.UTF8.GetBytes(options.Secret),
                HasPassword = options.Secret is not null,
                SessionExpiryInterval = v5 ? (uint)Math.Clamp(options.SessionExpiry.TotalSeconds, 0, uint.MaxValue) : null,
                ReceiveMaximum = v5 ? receiveMaximum : null,
                MaximumPacketSize = v5 ? (uint)options.MaxPacketSize : null,
            };
            var outcome = await connection.HandshakeAsync(connect, linked.Token).ConfigureAwait(false);
            return (connection, outcome);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !stop.IsCancellationRequested)
        {
            await DisposeQuietly(connection, stream).ConfigureAwait(false);
            throw new TimeoutException($"No CONNACK within ConnectTimeout ({options.ConnectTimeout}).");
        }
        catch
        {
            await DisposeQuietly(connection, stream).ConfigureAwait(false);
            throw;
        }
    }

    private static async ValueTask DisposeQuietly(MqttConnection? connection, Stream? stream)
    {
        if (connection is not null)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }
        else if (stream is not null)
        {
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }
}

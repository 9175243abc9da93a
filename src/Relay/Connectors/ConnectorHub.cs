using Microsoft.Extensions.Options;
using Relay.Protocol.Mqtt;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;

namespace Relay.Server.Connectors;

/// <summary>
/// The connectors of <c>Relay:Connectors</c>: sees every PUBLISH the broker accepts and hands a copy to each
/// connector whose topic filter matches. Best effort with accounting: the client's PUBACK never waits for a
/// connector (a down database must not stall devices), so a message is the connector's from here on, and
/// what it cannot deliver is spilled to disk or counted as dropped (<see cref="ConnectorPipeline"/>).
/// </summary>
internal sealed class ConnectorHub : IMqttMessageObserver, IHostedService, IAsyncDisposable
{
    private readonly ConnectorPipeline[] _pipelines;
    private readonly TimeProvider _time;
    private int _disposed;

    public ConnectorHub(
        IOptions<ConnectorsOptions> options, ConnectorMetrics metrics, RelayDataDirectory dataDirectory, TimeProvider time, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(dataDirectory);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _time = time;
        var logger = loggerFactory.CreateLogger("Relay.Server.Connectors");
        var all = options.Value.All;
        var pipelines = new List<ConnectorPipeline>(all.Count);
        try
        {
            for (var i = 0; i < all.Count; i++)
            {
                var connector = all[i];
                var spill = connector.SpillMaxBytes > 0 ? OpenSpill(dataDirectory.FullPath, connector) : null;
                IConnectorTarget target = connector switch
                {
                    PostgresConnectorOptions postgres => new PostgresConnectorTarget(postgres),
                    RedisConnectorOptions redis => new RedisConnectorTarget(redis),
                    HttpConnectorOptions http => new HttpConnectorTarget(http),
                    _ => throw new InvalidOperationException($"no target for {connector.GetType().Name}"),
                };
                pipelines.Add(new ConnectorPipeline(i, connector, target, spill, metrics, time, logger));
            }
        }
        catch
        {
            foreach (var pipeline in pipelines)
            {
                pipeline.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }

            throw;
        }

        _pipelines = [.. pipelines];
    }

    /// <summary>The connectors, in configuration order (Postgres, Redis, Http); tests read them.</summary>
    internal IReadOnlyList<ConnectorPipeline> Pipelines => _pipelines;

    public ValueTask<bool> OnMessageReceived(string clientId, StoredMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        ConnectorMessage? copy = null;
        foreach (var pipeline in _pipelines)
        {
            if (MqttTopic.Matches(pipeline.TopicFilter, message.Topic))
            {
                // One record shared by every connector: it is immutable and owns its payload.
                copy ??= new ConnectorMessage(clientId, message.Topic, message.Payload, message.QoS, message.Retain, _time.GetUtcNow());
                pipeline.Offer(copy);
            }
        }

        return ValueTask.FromResult(true);
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var pipeline in _pipelines)
        {
            pipeline.Start();
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.WhenAll(_pipelines.Select(p => p.StopAsync(cancellationToken)));

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (var pipeline in _pipelines)
        {
            await pipeline.DisposeAsync();
        }
    }

    private static ConnectorSpillQueue OpenSpill(string dataDirectory, ConnectorOptions connector)
    {
        var directory = ConnectorServices.SpillDirectory(dataDirectory, connector.Name);
        try
        {
            return new ConnectorSpillQueue(directory, connector.SpillMaxBytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RelayConfigurationException(
                $"{ConnectorsOptions.SectionName}: connector '{connector.Name}' cannot open its spill directory '{directory}' ({e.Message})");
        }
    }
}

using System.Globalization;
using StackExchange.Redis;

namespace Relay.Server.Connectors;

/// <summary>
/// Writes each batch to Redis in one pipeline (all commands sent, then all answers awaited).
/// <para><b>Keys</b>: the payload as a string at <c>{KeyPrefix}{clientId}_{unixtime}</c> (Unix seconds of
/// reception), the layout of the Bevywise connector. A key is never overwritten (<c>SET ... NX</c>): a client's
/// second message in the same second goes to <c>{clientId}_{unixtime}_1</c>, the third to <c>_2</c>, and so
/// on; the connector hands out suffixes in order per client and second and, when one was taken (after a restart,
/// or a retried batch), moves past every suffix it handed out.
/// With <c>KeyTtlSeconds</c> each key gets <c>EX</c>.</para>
/// <para><b>Stream</b>: <c>XADD {StreamKey} MAXLEN ~ {StreamMaxLength} * client {clientId} topic {topic}
/// payload {payload} qos {0..2} retain {0|1} at {Unix ms}</c>.</para>
/// </summary>
internal sealed class RedisConnectorTarget : IConnectorTarget
{
    /// <summary>Rounds of "that key was taken, try the next suffix" for one batch before it fails (and is retried).</summary>
    private const int MaxCollisionRounds = 64;

    /// <summary>Clients whose last second and suffix are remembered; forgotten all at once past it (only a guess is lost).</summary>
    private const int MaxRememberedClients = 10_000;

    private readonly RedisConnectorOptions _options;
    private readonly ConfigurationOptions _configuration;
    private readonly SemaphoreSlim _connectGate = new(1, 1);
    private readonly Dictionary<string, (long Second, int Next)> _nextSuffix = new(StringComparer.Ordinal);
    private ConnectionMultiplexer? _redis;

    public RedisConnectorTarget(RedisConnectorOptions options)
    {
        _options = options;
        _configuration = ConfigurationOptions.Parse(options.Configuration);

        // The connector owns retries and backoff; the multiplexer reconnects on its own and never throws at connect.
        _configuration.AbortOnConnectFail = false;
        _configuration.ConnectTimeout = options.TimeoutSeconds * 1000;
        _configuration.SyncTimeout = options.TimeoutSeconds * 1000;
        _configuration.AsyncTimeout = options.TimeoutSeconds * 1000;
    }

    /// <summary>The key of a client's message in a second, before any collision suffix.</summary>
    public static string BaseKey(string prefix, string clientId, DateTimeOffset receivedAt) =>
        string.Concat(prefix, clientId, "_", receivedAt.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture));

    public async Task DeliverAsync(IReadOnlyList<ConnectorMessage> batch, CancellationToken cancellationToken)
    {
        var database = (await ConnectAsync(cancellationToken)).GetDatabase();
        if (!database.Multiplexer.IsConnected)
        {
            // Fail fast rather than queue commands in the multiplexer until their timeout: the pipeline spills meanwhile.
            throw new InvalidOperationException("Redis is not connected");
        }

        if (_options.Mode == RedisConnectorMode.Stream)
        {
            await WriteStreamAsync(database, batch, cancellationToken);
        }
        else
        {
            await WriteKeysAsync(database, batch, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_redis is not null)
        {
            await _redis.DisposeAsync();
        }

        _connectGate.Dispose();
    }

    private async Task<ConnectionMultiplexer> ConnectAsync(CancellationToken cancellationToken)
    {
        if (_redis is { } connected)
        {
            return connected;
        }

        await _connectGate.WaitAsync(cancellationToken);
        try
        {
            return _redis ??= await ConnectionMultiplexer.ConnectAsync(_configuration).WaitAsync(cancellationToken);
        }
        finally
        {
            _connectGate.Release();
        }
    }

    private async Task WriteStreamAsync(IDatabase database, IReadOnlyList<ConnectorMessage> batch, CancellationToken cancellationToken)
    {
        var writes = new Task[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            var message = batch[i];
            NameValueEntry[] fields =
            [
                new("client", message.ClientId),
                new("topic", message.Topic),
                new("payload", message.Payload),
                new("qos", (int)message.QoS),
                new("retain", message.Retain ? 1 : 0),
                new("at", message.ReceivedAt.ToUnixTimeMilliseconds()),
            ];
            writes[i] = database.StreamAddAsync(
                _options.StreamKey, fields, messageId: null, maxLength: _options.StreamMaxLength, useApproximateMaxLength: true);
        }

        await Task.WhenAll(writes).WaitAsync(cancellationToken);
    }

    private async Task WriteKeysAsync(IDatabase database, IReadOnlyList<ConnectorMessage> batch, CancellationToken cancellationToken)
    {
        TimeSpan? ttl = _options.KeyTtlSeconds > 0 ? TimeSpan.FromSeconds(_options.KeyTtlSeconds) : null;
        if (_nextSuffix.Count > MaxRememberedClients)
        {
            _nextSuffix.Clear();
        }

        // Each message's base key and the suffix to try (0: none).
        var pending = new List<(ConnectorMessage Message, string BaseKey, int Suffix)>(batch.Count);
        foreach (var message in batch)
        {
            var baseKey = BaseKey(_options.KeyPrefix, message.ClientId, message.ReceivedAt);
            pending.Add((message, baseKey, Guess(message.ClientId, message.ReceivedAt.ToUnixTimeSeconds())));
        }

        for (var round = 0; pending.Count > 0; round++)
        {
            if (round == MaxCollisionRounds)
            {
                throw new InvalidOperationException($"Redis keys: {pending.Count} messages found no free key suffix in {MaxCollisionRounds} rounds");
            }

            var writes = new Task<bool>[pending.Count];
            for (var i = 0; i < pending.Count; i++)
            {
                var (message, baseKey, suffix) = pending[i];
                var key = suffix == 0 ? baseKey : string.Concat(baseKey, "_", suffix.ToString(CultureInfo.InvariantCulture));
                writes[i] = database.StringSetAsync(key, message.Payload, ttl, When.NotExists);
            }

            await Task.WhenAll(writes).WaitAsync(cancellationToken);
            var taken = new List<(ConnectorMessage, string, int)>();
            for (var i = 0; i < pending.Count; i++)
            {
                if (!writes[i].Result)
                {
                    // Taken (written before a restart, or by a try whose answer was lost): the next suffix past
                    // every one handed out, so it cannot collide with a message of this batch.
                    var (message, baseKey, suffix) = pending[i];
                    taken.Add((message, baseKey, Math.Max(suffix + 1, Guess(message.ClientId, message.ReceivedAt.ToUnixTimeSeconds()))));
                }
            }

            pending = taken;
        }
    }

    // The suffix for this client's next message in this second: one past the last one handed out.
    private int Guess(string clientId, long second)
    {
        var next = _nextSuffix.TryGetValue(clientId, out var last) && last.Second == second ? last.Next : 0;
        _nextSuffix[clientId] = (second, next + 1);
        return next;
    }
}

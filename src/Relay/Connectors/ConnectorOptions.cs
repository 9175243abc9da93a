using System.Text.RegularExpressions;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Connectors;

/// <summary>
/// What every connector entry has: which messages it takes, how much it may hold in memory and on disk while
/// its target is down, and how it retries. <c>Relay:Connectors:{Postgres|Redis|Http}:N:...</c>.
/// </summary>
public abstract partial class ConnectorOptions
{
    /// <summary>Names the connector in metrics (label <c>connector</c>), logs and its spill directory; default <c>{kind}-{index}</c>.</summary>
    public string Name { get; set; } = string.Empty;

    /// <summary>MQTT topic filter (<c>+</c> and <c>#</c> wildcards) of the PUBLISHes this connector writes out.</summary>
    public string TopicFilter { get; set; } = "#";

    /// <summary>Messages held in memory waiting for the target; one more is spilled or dropped (counted).</summary>
    public int BufferCapacity { get; set; } = 10_000;

    /// <summary>Topic and payload bytes held in memory, the other bound on the same buffer.</summary>
    public long BufferMaxBytes { get; set; } = 16 * 1024 * 1024;

    /// <summary>Messages per write to the target (one COPY, one Redis pipeline, one POST).</summary>
    public int BatchSize { get; set; } = 500;

    /// <summary>
    /// Bytes on disk (data directory, <c>connectors/{Name}/</c>, 0600) for messages the target could not take;
    /// past it new messages are dropped and counted. 0 turns spilling off: the memory buffer is then all there is.
    /// </summary>
    public long SpillMaxBytes { get; set; } = 256L * 1024 * 1024;

    /// <summary>Quick retries of one batch (transient faults: a dropped connection) before the target counts as down.</summary>
    public int MaxRetryAttempts { get; set; } = 2;

    /// <summary>Wait before the first retry; doubles (with jitter) each retry and each failed probe of a down target.</summary>
    public int InitialBackoffMilliseconds { get; set; } = 200;

    /// <summary>Longest wait between two tries of a down target.</summary>
    public int MaxBackoffSeconds { get; set; } = 30;

    /// <summary>Time allowed for one write to the target, connection included.</summary>
    public int TimeoutSeconds { get; set; } = 10;

    internal abstract string Kind { get; }

    internal virtual void Validate(string key, List<string> errors)
    {
        if (Name.Length > 0 && !NamePattern().IsMatch(Name))
        {
            errors.Add($"{key}:Name: must be 1-48 of a-z, 0-9, '-' and '_', starting with a letter or digit (was '{Name}')");
        }

        if (!MqttTopic.IsValidTopicFilter(TopicFilter) || TopicFilter.StartsWith("$share/", StringComparison.Ordinal))
        {
            errors.Add($"{key}:TopicFilter: must be an MQTT topic filter, not a shared subscription (was '{TopicFilter}')");
        }

        Range(errors, key, "BufferCapacity", BufferCapacity, 1, 10_000_000);
        Range(errors, key, "BufferMaxBytes", BufferMaxBytes, 64 * 1024, 16L * 1024 * 1024 * 1024);
        Range(errors, key, "BatchSize", BatchSize, 1, 100_000);
        Range(errors, key, "SpillMaxBytes", SpillMaxBytes, 0, 1L << 40);
        Range(errors, key, "MaxRetryAttempts", MaxRetryAttempts, 0, 100);
        Range(errors, key, "InitialBackoffMilliseconds", InitialBackoffMilliseconds, 1, 3_600_000);
        Range(errors, key, "MaxBackoffSeconds", MaxBackoffSeconds, 1, 86_400);
        Range(errors, key, "TimeoutSeconds", TimeoutSeconds, 1, 3_600);
    }

    internal static void Range(List<string> errors, string key, string name, long value, long min, long max)
    {
        if (value < min || value > max)
        {
            errors.Add($"{key}:{name}: must be between {min} and {max} (was {value})");
        }
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9_-]{0,47}$")]
    private static partial Regex NamePattern();
}

/// <summary><c>Relay:Connectors:Postgres:N</c>: every matching message as one row of <see cref="Table"/>.</summary>
public sealed partial class PostgresConnectorOptions : ConnectorOptions
{
    /// <summary>Npgsql connection string (<c>Host=...;Port=...;Username=...;Password=...;Database=...</c>).</summary>
    public string ConnectionString { get; set; } = string.Empty;

    /// <summary>Table written to, created if missing; <c>name</c> or <c>schema.name</c>, lower case.</summary>
    public string Table { get; set; } = "relay_messages";

    internal override string Kind => "postgres";

    internal override void Validate(string key, List<string> errors)
    {
        base.Validate(key, errors);
        if (string.IsNullOrWhiteSpace(ConnectionString))
        {
            errors.Add($"{key}:ConnectionString: must be set");
        }
        else
        {
            try
            {
                _ = new Npgsql.NpgsqlConnectionStringBuilder(ConnectionString);
            }
            catch (ArgumentException e)
            {
                // The message names the bad keyword, never the value (which may be a password).
                errors.Add($"{key}:ConnectionString: not a valid Npgsql connection string ({e.Message})");
            }
        }

        if (!TablePattern().IsMatch(Table))
        {
            errors.Add($"{key}:Table: must be a lower-case SQL identifier of at most 40 characters, optionally schema-qualified (was '{Table}')");
        }
    }

    [GeneratedRegex("^([a-z_][a-z0-9_]{0,39}\\.)?[a-z_][a-z0-9_]{0,39}$")]
    private static partial Regex TablePattern();
}

/// <summary>What the Redis connector writes.</summary>
public enum RedisConnectorMode
{
    /// <summary>One string key per payload, <c>{KeyPrefix}{clientId}_{unixtime}</c> (the Bevywise layout).</summary>
    Keys,

    /// <summary>One entry per message in the stream <see cref="RedisConnectorOptions.StreamKey"/> (XADD ... MAXLEN ~).</summary>
    Stream,
}

/// <summary><c>Relay:Connectors:Redis:N</c>: every matching message as a key or a stream entry.</summary>
public sealed class RedisConnectorOptions : ConnectorOptions
{
    /// <summary>StackExchange.Redis configuration string (<c>host:port,password=...,ssl=true</c>).</summary>
    public string Configuration { get; set; } = string.Empty;

    /// <summary><c>Keys</c> or <c>Stream</c>.</summary>
    public RedisConnectorMode Mode { get; set; } = RedisConnectorMode.Keys;

    /// <summary>Keys mode: put before every key (empty: exactly <c>{clientId}_{unixtime}</c>).</summary>
    public string KeyPrefix { get; set; } = string.Empty;

    /// <summary>Keys mode: each key expires after this many seconds; 0 keeps it.</summary>
    public int KeyTtlSeconds { get; set; }

    /// <summary>Stream mode: the stream's key.</summary>
    public string StreamKey { get; set; } = "relay:messages";

    /// <summary>Stream mode: trimmed to about this many entries (<c>MAXLEN ~</c>).</summary>
    public long StreamMaxLength { get; set; } = 1_000_000;

    internal override string Kind => "redis";

    internal override void Validate(string key, List<string> errors)
    {
        base.Validate(key, errors);
        if (string.IsNullOrWhiteSpace(Configuration))
        {
            errors.Add($"{key}:Configuration: must be set (host:port[,password=...])");
        }
        else
        {
            try
            {
                _ = StackExchange.Redis.ConfigurationOptions.Parse(Configuration);
            }
            catch (ArgumentException e)
            {
                errors.Add($"{key}:Configuration: not a valid StackExchange.Redis configuration ({e.Message})");
            }
        }

        if (KeyPrefix.Length > 256)
        {
            errors.Add($"{key}:KeyPrefix: at most 256 characters");
        }

        Range(errors, key, "KeyTtlSeconds", KeyTtlSeconds, 0, int.MaxValue);
        if (Mode == RedisConnectorMode.Stream && (StreamKey.Length is 0 or > 256))
        {
            errors.Add($"{key}:StreamKey: must be 1-256 characters");
        }

        Range(errors, key, "StreamMaxLength", StreamMaxLength, 1, long.MaxValue);
    }
}

/// <summary><c>Relay:Connectors:Http:N</c>: batches of messages POSTed as a JSON array.</summary>
public sealed class HttpConnectorOptions : ConnectorOptions
{
    /// <summary>Absolute http or https URL that receives the POSTs.</summary>
    public string Url { get; set; } = string.Empty;

    /// <summary>Sent as <c>Authorization: Bearer ...</c> when set.</summary>
    public string BearerToken { get; set; } = string.Empty;

    internal override string Kind => "http";

    internal override void Validate(string key, List<string> errors)
    {
        base.Validate(key, errors);
        if (!Uri.TryCreate(Url, UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
        {
            errors.Add($"{key}:Url: must be an absolute http or https URL (was '{Primitives.LogText.Url(Url)}')");
        }

        if (BearerToken.AsSpan().ContainsAny('\r', '\n'))
        {
            errors.Add($"{key}:BearerToken: must be one line");
        }
    }
}

using Microsoft.Extensions.Configuration;
using Relay.Server.Connectors;

namespace Relay.Unit.Tests.Connectors;

/// <summary><c>Relay:Connectors</c>: strict binding and validation, every problem named by its key.</summary>
public sealed class ConnectorsOptionsTests
{
    [Fact]
    public void AGoodConfiguration_Binds_WithDefaultNamesPerKind()
    {
        var (options, errors) = Bind(new()
        {
            ["Relay:Connectors:Postgres:0:ConnectionString"] = "Host=127.0.0.1;Username=relay",
            ["Relay:Connectors:Redis:0:Configuration"] = "127.0.0.1:6379",
            ["Relay:Connectors:Redis:0:Mode"] = "Stream",
            ["Relay:Connectors:Http:0:Url"] = "https://example.test/ingest",
            ["Relay:Connectors:Http:1:Url"] = "http://127.0.0.1:9000/x",
            ["Relay:Connectors:Http:1:Name"] = "audit",
            ["Relay:Connectors:Http:1:TopicFilter"] = "devices/+/telemetry",
        });
        Assert.Empty(errors);
        Assert.Equal(["postgres-0", "redis-0", "http-0", "audit"], options.All.Select(static c => c.Name));
        Assert.Equal(RedisConnectorMode.Stream, options.Redis[0].Mode);
        Assert.Equal("#", options.Http[0].TopicFilter);
    }

    [Fact]
    public void EveryProblem_IsNamedByItsKey()
    {
        var (_, errors) = Bind(new()
        {
            ["Relay:Connectors:Mongo:0:Url"] = "mongodb://x",
            ["Relay:Connectors:Postgres:0:ConnectionString"] = "",
            ["Relay:Connectors:Postgres:0:Table"] = "Robert'); DROP TABLE x;--",
            ["Relay:Connectors:Redis:0:Configuration"] = "127.0.0.1:6379",
            ["Relay:Connectors:Redis:0:Mode"] = "Hash",
            ["Relay:Connectors:Http:0:Url"] = "ftp://x",
            ["Relay:Connectors:Http:0:TopicFilter"] = "a/#/b",
            ["Relay:Connectors:Http:0:BufferCapacity"] = "0",
            ["Relay:Connectors:Http:1:Url"] = "http://127.0.0.1/",
            ["Relay:Connectors:Http:1:Name"] = "http-0",
            ["Relay:Connectors:Http:2:Url"] = "http://127.0.0.1/",
            ["Relay:Connectors:Http:2:Typo"] = "1",
        });
        var all = string.Join('\n', errors);
        Assert.Contains("Relay:Connectors:Mongo: unknown connector kind", all, StringComparison.Ordinal);
        Assert.Contains("Relay:Connectors:Postgres:0:ConnectionString: must be set", all, StringComparison.Ordinal);
        Assert.Contains("Relay:Connectors:Postgres:0:Table:", all, StringComparison.Ordinal);
        Assert.Contains("Relay:Connectors:Redis:0:Mode", all, StringComparison.Ordinal);
        Assert.Contains("Relay:Connectors:Http:0:Url:", all, StringComparison.Ordinal);
        Assert.Contains("Relay:Connectors:Http:0:TopicFilter:", all, StringComparison.Ordinal);
        Assert.Contains("Relay:Connectors:Http:0:BufferCapacity:", all, StringComparison.Ordinal);
        Assert.Contains("Relay:Connectors:Http:2: unknown key(s) 'Typo'", all, StringComparison.Ordinal);
        Assert.Contains("the name 'http-0' is used by 2 connectors", all, StringComparison.Ordinal);
    }

    private static (ConnectorsOptions Options, List<string> Errors) Bind(Dictionary<string, string?> settings)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var options = new ConnectorsOptions();
        var errors = new List<string>();
        ConnectorsOptions.Bind(configuration.GetSection(ConnectorsOptions.SectionName), options, errors);
        var result = new ConnectorsOptionsValidator().Validate(null, options);
        if (result.Failed)
        {
            errors.AddRange(result.Failures);
        }

        return (options, errors);
    }
}

using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Relay.Server.Tests;

/// <summary>A meter factory of its own for a test that builds a feature's metrics without a host.</summary>
internal static class TestMeters
{
    public static IMeterFactory NewFactory() => new ServiceCollection().AddMetrics().BuildServiceProvider().GetRequiredService<IMeterFactory>();
}

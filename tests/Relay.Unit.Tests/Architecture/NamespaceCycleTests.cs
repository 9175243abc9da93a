using System.Text;
using Relay.Server;

namespace Relay.Unit.Tests.Architecture;

/// <summary>
/// The server's feature namespaces depend on each other one way. Each node is a top-level namespace of
/// Relay.dll under <c>Relay.Server</c> with its sub-namespaces folded in (<c>Relay.Server.Mqtt.Storage</c>
/// counts as <c>Relay.Server.Mqtt</c>); <c>Relay.Server</c> itself (the host's composition root) is a node too.
/// Dependencies within one node are not checked. See <see cref="NamespaceDependencyGraph"/> for what counts
/// as a dependency.
/// </summary>
public sealed class NamespaceCycleTests
{
    private const string Root = "Relay.Server";

    internal static string? FeatureOf(string ns)
    {
        if (ns == Root)
        {
            return Root;
        }

        if (!ns.StartsWith(Root + ".", StringComparison.Ordinal))
        {
            return null;
        }

        var rest = ns[(Root.Length + 1)..];
        var dot = rest.IndexOf('.', StringComparison.Ordinal);
        return Root + "." + (dot < 0 ? rest : rest[..dot]);
    }

    [Fact]
    public void RelayServerFeatureNamespaces_HaveNoCycles()
    {
        var graph = NamespaceDependencyGraph.Read(typeof(RelayHost).Assembly.Location, FeatureOf);
        Assert.True(graph.Edges.Count > 3, "the graph should see the features' dependencies; did the reader find nothing?");

        var report = new StringBuilder();
        foreach (var component in graph.Cycles())
        {
            report.AppendLine($"Cycle among {string.Join(", ", component)}:");
            var path = graph.ShortestCycleThrough(component[0], component);
            for (var i = 0; i + 1 < path.Count; i++)
            {
                var (from, to) = graph.Edges[path[i]][path[i + 1]];
                report.AppendLine($"  {path[i]} -> {path[i + 1]}   ({from} uses {to})");
            }
        }

        Assert.True(report.Length == 0, "Namespace cycles in Relay.dll:\n" + report);
    }

    [Fact]
    public void TheGraph_SeesAKnownDependency()
    {
        // The host composes the features, so the reader must find Relay.Server -> Relay.Server.Mqtt.
        var graph = NamespaceDependencyGraph.Read(typeof(RelayHost).Assembly.Location, FeatureOf);
        Assert.Contains("Relay.Server.Mqtt", graph.Edges[Root].Keys);
    }

    [Theory]
    [InlineData("Relay.Server", "Relay.Server")]
    [InlineData("Relay.Server.Mqtt", "Relay.Server.Mqtt")]
    [InlineData("Relay.Server.Mqtt.Storage", "Relay.Server.Mqtt")]
    [InlineData("Relay.Protocol.Stun", null)]
    [InlineData("Relay.ServerX", null)]
    public void FeatureOf_FoldsSubNamespaces(string ns, string? feature) => Assert.Equal(feature, FeatureOf(ns));
}

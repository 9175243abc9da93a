using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Broker;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The trees walk iteratively, whatever the configured limits allow: 100,000 levels on a thread with a
/// 256 KiB stack. A recursive walk needs one frame per level and overflows here (before the fix this
/// test ended the test host, which the test run reports as a failed assembly).
/// </summary>
public sealed class TopicTreeDepthTests
{
    private const int Levels = 100_000;
    private static readonly string Deep = "a" + string.Concat(Enumerable.Repeat("/x", Levels));

    [Fact]
    public void RetainedTree_MatchCollectAndRemove_AtAnyDepth()
    {
        RunOnSmallStack(() =>
        {
            var tree = new MqttRetainedTree();
            tree.Set(new StoredMessage(Deep, new byte[] { 1 }, 0, true, null, null));
            tree.Set(new StoredMessage("a/y", new byte[] { 2 }, 0, true, null, null));
            var results = new List<StoredMessage>();
            tree.Match("#", results);
            Assert.Equal(2, results.Count);
            results.Clear();
            tree.Match("a/#", results);
            Assert.Equal(2, results.Count);
            results.Clear();
            tree.Match(Deep, results);
            Assert.Equal(Deep, Assert.Single(results).Topic);
            results.Clear();
            tree.Match(Deep[..^1] + "+", results);
            Assert.Equal(Deep, Assert.Single(results).Topic);
            Assert.True(tree.Remove(Deep));
            Assert.False(tree.Contains(Deep));
            Assert.Equal(1, tree.Count);
            results.Clear();
            tree.Match("#", results);
            Assert.Equal("a/y", Assert.Single(results).Topic);
        });
    }

    [Fact]
    public void SubscriptionTree_MatchAndRemove_AtAnyDepth()
    {
        RunOnSmallStack(() =>
        {
            var tree = new MqttSubscriptionTree();
            var session = BrokerKit.Session("c");
            var exact = new MqttSubscription(session, Deep, Deep, null);
            var plus = new MqttSubscription(session, "a/" + string.Concat(Enumerable.Repeat("+/", Levels - 1)) + "#", "a/" + string.Concat(Enumerable.Repeat("+/", Levels - 1)) + "#", null);
            tree.Add(exact);
            tree.Add(plus);
            var results = new List<MqttSubscription>();
            tree.Match(Deep, results);
            Assert.Equal(2, results.Count);
            tree.Remove(exact);
            tree.Remove(plus);
            results.Clear();
            tree.Match(Deep, results);
            Assert.Empty(results);
        });
    }

    private static void RunOnSmallStack(Action test)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                test();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }, maxStackSize: 256 * 1024);
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromMinutes(2)), "the walk did not finish");
        if (failure is not null)
        {
            throw new Xunit.Sdk.XunitException("walk failed: " + failure);
        }
    }
}

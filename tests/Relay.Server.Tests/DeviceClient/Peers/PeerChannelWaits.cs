using System.Text;
using Relay.DeviceClient.Peers;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>Event-driven waits on a <see cref="PeerChannel"/>, bounded so a broken path fails the test instead of hanging it.</summary>
internal static class PeerChannelWaits
{
    /// <summary>Completes when the channel is on <paramref name="path"/> (now or after a PathChanged).</summary>
    public static Task WaitForPathAsync(this PeerChannel channel, PeerPath path, TimeSpan bound)
    {
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        channel.PathChanged += (_, e) =>
        {
            if (e.Current == path)
            {
                reached.TrySetResult();
            }
        };
        if (channel.Path == path)
        {
            reached.TrySetResult();
        }

        return reached.Task.WaitAsync(bound);
    }

    /// <summary>The next message, as UTF-8 text.</summary>
    public static async Task<string> ReceiveTextAsync(this PeerChannel channel, TimeSpan bound)
    {
        using var timeout = new CancellationTokenSource(bound);
        var message = await channel.ReceiveAsync(timeout.Token);
        return Encoding.UTF8.GetString(message.Span);
    }
}

using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace Relay.LoadGen;

/// <summary>
/// The soak's command back end: --command-rate POST /v1/devices/{id}/commands per second to random devices
/// (online or not: a persistent session gets its queued commands when it comes back, docs/push.md), each
/// one then followed with GET /v1/commands/{id}?wait=25 until it is final. At most
/// <see cref="MaxFollowing"/> are followed at once; past that a command is not sent (counted), so the
/// generator's memory stays bounded whatever the server does.
/// </summary>
internal sealed class SoakCommands(SoakOptions o, SoakLedger ledger, HttpClient http)
{
    private const int MaxFollowing = 4000;
    private static readonly MediaTypeHeaderValue Json = new("application/json");
    private static readonly HashSet<string> FinalStates = new(StringComparer.Ordinal) { "succeeded", "failed", "expired", "canceled" };

    private int _following;

    /// <summary>Commands sent until <paramref name="churn"/> ends; their follows go on until <paramref name="stop"/>.</summary>
    public async Task RunAsync(CancellationToken churn, CancellationToken stop)
    {
        if (o.CommandRate <= 0)
        {
            return;
        }

        var start = Stopwatch.GetTimestamp();
        long launched = 0;
        while (!churn.IsCancellationRequested)
        {
            var due = (long)(Stopwatch.GetElapsedTime(start).TotalSeconds * o.CommandRate);
            for (; launched < due; launched++)
            {
                if (Volatile.Read(ref _following) >= MaxFollowing)
                {
                    Interlocked.Increment(ref ledger.CommandFollowsSkipped);
                    continue;
                }

                Interlocked.Increment(ref _following);
                _ = SendAndFollowAsync(o.IdPrefix + Random.Shared.Next(o.Devices).ToString("D5", System.Globalization.CultureInfo.InvariantCulture), stop);
            }

            try
            {
                await Task.Delay(50, churn);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    /// <summary>Commands still being followed.</summary>
    public int Following => Volatile.Read(ref _following);

    private async Task SendAndFollowAsync(string device, CancellationToken stop)
    {
        try
        {
            var id = await SendAsync(device, stop);
            if (id is null)
            {
                return;
            }

            ledger.CommandAccepted(id);
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var response = await http.GetAsync($"/v1/commands/{id}?wait=25", stop);
                    var bytes = await response.Content.ReadAsByteArrayAsync(stop);
                    if (response.StatusCode != HttpStatusCode.OK)
                    {
                        Interlocked.Increment(ref ledger.CommandHttpErrors);
                        Interlocked.CompareExchange(ref ledger.FirstCommandError, $"GET {id}: {(int)response.StatusCode} {Encoding.UTF8.GetString(bytes)}", null);
                        await Task.Delay(1000, stop);
                        continue;
                    }

                    var state = PushLoad.ReadString(bytes, "state");
                    if (FinalStates.Contains(state))
                    {
                        ledger.CommandFinal(id, state);
                        return;
                    }
                }
                catch (Exception e) when (e is HttpRequestException or InvalidDataException or System.Text.Json.JsonException || (e is TaskCanceledException && !stop.IsCancellationRequested))
                {
                    Interlocked.Increment(ref ledger.CommandHttpErrors);
                    Interlocked.CompareExchange(ref ledger.FirstCommandError, $"GET {id}: {e.Message}", null);
                    await Task.Delay(1000, stop);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            Interlocked.Decrement(ref _following);
        }
    }

    /// <summary>POST one command; its id on 202, null otherwise (counted by status).</summary>
    private async Task<string?> SendAsync(string device, CancellationToken stop)
    {
        Interlocked.Increment(ref ledger.CommandsPosted);
        // A TTL well past the run and its drain: a command may only end succeeded.
        using var content = new ByteArrayContent("{\"name\":\"soak\",\"payload\":{\"n\":1},\"ttlSeconds\":86400,\"qos\":1}"u8.ToArray());
        content.Headers.ContentType = Json;
        try
        {
            using var response = await http.PostAsync($"/v1/devices/{device}/commands", content, stop);
            var bytes = await response.Content.ReadAsByteArrayAsync(stop);
            if (response.StatusCode == HttpStatusCode.Accepted)
            {
                return PushLoad.ReadString(bytes, "id");
            }

            Interlocked.Increment(ref ledger.CommandsNotAccepted);
            ledger.CommandRefused(((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture));
            Interlocked.CompareExchange(ref ledger.FirstCommandError, $"POST {device}: {(int)response.StatusCode} {Encoding.UTF8.GetString(bytes)}", null);
            return null;
        }
        catch (Exception e) when (e is HttpRequestException or InvalidDataException or System.Text.Json.JsonException || (e is TaskCanceledException && !stop.IsCancellationRequested))
        {
            // Not accepted as far as we know: not followed, not a loss. A 202 that timed out on the way
            // back would be a command we never hear of; counted as an HTTP error to look at.
            Interlocked.Increment(ref ledger.CommandsNotAccepted);
            Interlocked.Increment(ref ledger.CommandHttpErrors);
            ledger.CommandRefused("http_error");
            Interlocked.CompareExchange(ref ledger.FirstCommandError, $"POST {device}: {e.Message}", null);
            return null;
        }
    }
}

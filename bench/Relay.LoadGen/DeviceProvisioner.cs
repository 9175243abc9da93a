using System.Diagnostics;
using System.Net;
using System.Text;

namespace Relay.LoadGen;

/// <summary>
/// Registered devices with server-generated secrets for the <c>push</c> and <c>soak</c> commands: each id
/// not yet in the devices file ("id secret" per line) is registered with POST /v1/devices and appended, so a
/// later run on the same data directory skips the step.
/// </summary>
internal static class DeviceProvisioner
{
    public static async Task<(List<(string Id, string Secret)> Credentials, int Provisioned, double Seconds)> ProvisionAsync(
        HttpClient http, string devicesFile, IReadOnlyList<string> ids, int concurrency, string logPrefix)
    {
        var known = new Dictionary<string, string>(StringComparer.Ordinal);
        if (File.Exists(devicesFile))
        {
            foreach (var line in await File.ReadAllLinesAsync(devicesFile))
            {
                var parts = line.Split(' ', 2);
                if (parts.Length == 2)
                {
                    known[parts[0]] = parts[1];
                }
            }
        }

        var missing = ids.Where(id => !known.ContainsKey(id)).ToList();
        var started = Stopwatch.GetTimestamp();
        if (missing.Count > 0)
        {
            Console.Error.WriteLine(FormattableString.Invariant($"{logPrefix}: registering {missing.Count} devices through POST /v1/devices"));
            await using var file = new StreamWriter(devicesFile, append: true);
            var fileLock = new SemaphoreSlim(1, 1);
            long done = 0;
            await Parallel.ForEachAsync(missing, new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (id, ct) =>
            {
                var secret = await RegisterAsync(http, id, ct);
                await fileLock.WaitAsync(ct);
                try
                {
                    known[id] = secret;
                    await file.WriteLineAsync($"{id} {secret}".AsMemory(), ct);
                }
                finally
                {
                    fileLock.Release();
                }

                var n = Interlocked.Increment(ref done);
                if (n % 1000 == 0)
                {
                    Console.Error.WriteLine(FormattableString.Invariant($"{logPrefix}: {n} registered, {Stopwatch.GetElapsedTime(started).TotalSeconds:F0} s"));
                }
            });
        }

        return (ids.Select(id => (id, known[id])).ToList(), missing.Count, Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    private static async Task<string> RegisterAsync(HttpClient http, string id, CancellationToken ct)
    {
        using var response = await http.PostAsync("/v1/devices", new StringContent($"{{\"id\":\"{id}\"}}", Encoding.UTF8, "application/json"), ct);
        if (response.StatusCode == HttpStatusCode.Conflict)
        {
            // Registered by an earlier run whose devices file was lost: rotate the secret to learn one.
            using var rotated = await http.PostAsync($"/v1/devices/{id}/secret", null, ct);
            rotated.EnsureSuccessStatusCode();
            return PushLoad.ReadString(await rotated.Content.ReadAsByteArrayAsync(ct), "secret");
        }

        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"POST /v1/devices {id}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}");
        }

        return PushLoad.ReadString(await response.Content.ReadAsByteArrayAsync(ct), "secret");
    }
}

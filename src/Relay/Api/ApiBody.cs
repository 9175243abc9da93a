using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Relay.Server.Api;

/// <summary>
/// Reads a <c>/v1</c> request body as JSON within <c>Relay:Api:MaxRequestBodyBytes</c>. The declared
/// length is checked before anything is read, and a chunked body is cut off one byte past the limit,
/// so an oversized request costs at most the limit in memory and always gets a 413 problem (not a
/// reset connection or Kestrel's bare 413).
/// </summary>
internal static class ApiBody
{
    public static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpContext http, JsonTypeInfo<T> type, string example)
        where T : class
    {
        var limit = http.RequestServices.GetRequiredService<ApiOptions>().MaxRequestBodyBytes;
        if (http.Request.ContentLength > limit)
        {
            return (null, TooLarge(http, limit));
        }

        var buffer = ArrayPool<byte>.Shared.Rent(Math.Min(limit + 1, 16_384));
        var length = 0;
        try
        {
            while (true)
            {
                if (length == buffer.Length)
                {
                    if (length > limit)
                    {
                        return (null, TooLarge(http, limit));
                    }

                    var bigger = ArrayPool<byte>.Shared.Rent(Math.Min(limit + 1, buffer.Length * 2));
                    buffer.AsSpan(0, length).CopyTo(bigger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = bigger;
                }

                var read = await http.Request.Body.ReadAsync(buffer.AsMemory(length, Math.Min(buffer.Length, limit + 1) - length), http.RequestAborted);
                if (read == 0)
                {
                    break;
                }

                length += read;
                if (length > limit)
                {
                    return (null, TooLarge(http, limit));
                }
            }

            if (length == 0)
            {
                return (null, ApiProblems.BadRequest($"Send a JSON body, for example {example}."));
            }

            try
            {
                var value = JsonSerializer.Deserialize(buffer.AsSpan(0, length), type);
                return value is null ? (null, ApiProblems.BadRequest($"The body must be a JSON object, for example {example}.")) : (value, null);
            }
            catch (JsonException e)
            {
                return (null, ApiProblems.BadRequest($"The body is not valid JSON for this request ({e.Message}). Expected for example {example}."));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static IResult TooLarge(HttpContext http, int limit)
    {
        http.RequestServices.GetRequiredService<ApiMetrics>().CountBodyTooLarge();
        return ApiProblems.Problem(413, "Body too large", $"The request body is over {limit} bytes (Relay:Api:MaxRequestBodyBytes). Send a smaller body.");
    }
}

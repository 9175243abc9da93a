using System.Text;

namespace Relay.Server.Primitives;

/// <summary>
/// Untrusted text (client ids, user names, topics from the wire) made safe for one log line: at most
/// <see cref="MaxLength"/> characters, control characters and non-ASCII escaped as <c>\xNN</c> / <c>\uNNNN</c>,
/// so a client can neither forge a line break nor write megabytes into the log.
/// </summary>
internal static class LogText
{
    public const int MaxLength = 64;

    public static string Safe(string? text) => text is null ? "(none)" : Safe(text.AsSpan());

    public static string Safe(ReadOnlySpan<char> text)
    {
        var clean = true;
        foreach (var c in text)
        {
            if (c is < ' ' or > '~' or '\\')
            {
                clean = false;
                break;
            }
        }

        if (clean && text.Length <= MaxLength)
        {
            return text.ToString();
        }

        var builder = new StringBuilder(MaxLength + 16);
        foreach (var c in text)
        {
            if (builder.Length >= MaxLength)
            {
                builder.Append("…(").Append(text.Length).Append(" chars)");
                break;
            }

            if (c == '\\')
            {
                builder.Append(@"\\");
            }
            else if (c is >= ' ' and <= '~')
            {
                builder.Append(c);
            }
            else if (c <= 0xFF)
            {
                builder.Append(@"\x").Append(((int)c).ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                builder.Append(@"\u").Append(((int)c).ToString("x4", System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        return builder.ToString();
    }

    /// <summary>
    /// A configured URL (webhook, auth hook) for a log line: scheme, host, port and path only. User info and
    /// query string often carry credentials (a basic-auth password, an API key, a signed token), so they are
    /// left out; "?…" marks that a query was there.
    /// </summary>
    public static string Url(Uri url)
    {
        ArgumentNullException.ThrowIfNull(url);
        if (!url.IsAbsoluteUri)
        {
            return "(relative URL)";
        }

        var shown = url.GetComponents(UriComponents.SchemeAndServer | UriComponents.Path, UriFormat.UriEscaped);
        return url.Query.Length > 1 ? shown + "?…" : shown;
    }

    /// <inheritdoc cref="Url(Uri)"/>
    public static string Url(string? url) => Uri.TryCreate(url, UriKind.Absolute, out var parsed) ? Url(parsed) : "(not an absolute URL)";

    /// <summary>UTF-8 bytes from the wire, decoded leniently (invalid sequences become U+FFFD) then made safe.</summary>
    public static string Safe(ReadOnlySpan<byte> utf8)
    {
        // Decode only what can be shown: a 64 KiB topic is not turned into a 64 KiB string to log 64 chars.
        var head = utf8.Length > MaxLength * 4 ? utf8[..(MaxLength * 4)] : utf8;
        var text = Encoding.UTF8.GetString(head);
        var safe = Safe(text);
        return head.Length < utf8.Length && safe.Length <= MaxLength ? safe + $"…({utf8.Length} bytes)" : safe;
    }
}

namespace Relay.LoadGen;

/// <summary>The <c>--name value</c> pairs (and named flags without a value) of one LoadGen mode's command line.</summary>
internal static class OptionValues
{
    public static bool TryCollect(string[] args, int start, IReadOnlySet<string> flagNames, out Dictionary<string, string> values, out HashSet<string> flags, out string? error)
    {
        values = new Dictionary<string, string>(StringComparer.Ordinal);
        flags = new HashSet<string>(StringComparer.Ordinal);
        error = null;
        for (var i = start; i < args.Length; i++)
        {
            var name = args[i];
            if (!name.StartsWith("--", StringComparison.Ordinal))
            {
                error = $"unexpected '{name}'";
                return false;
            }

            if (flagNames.Contains(name))
            {
                flags.Add(name);
                continue;
            }

            if (i + 1 >= args.Length)
            {
                error = $"{name} needs a value";
                return false;
            }

            values[name] = args[++i];
        }

        return true;
    }
}

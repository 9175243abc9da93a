using System.Collections;
using System.Reflection;
using System.Text.RegularExpressions;

namespace Relay.Server.Hosting;

/// <summary>
/// Binds a configuration section onto an options object and turns what the binder throws into
/// <c>Relay:Section:Key: problem</c> lines, so one start lists every misspelt key and unreadable value.
/// </summary>
internal static partial class StrictBinder
{
    /// <summary>
    /// Binds <paramref name="section"/> into <paramref name="target"/>. With <paramref name="strict"/> a key that
    /// names no property is an error (a typo would otherwise be ignored silently).
    /// </summary>
    public static void Bind(IConfigurationSection section, object target, bool strict, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(section);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(errors);
        try
        {
            section.Bind(target, binder => binder.ErrorOnUnknownConfiguration = strict);
        }
        catch (InvalidOperationException e) when (e.InnerException is null && e.Message.Contains("were not found", StringComparison.Ordinal))
        {
            // The binder lists misspelt keys as "...the following properties were not found on the instance of T: 'A', 'B'".
            var unknown = e.Message[(e.Message.LastIndexOf(": ", StringComparison.Ordinal) + 2)..];
            errors.Add($"{section.Path}: unknown key(s) {unknown}; see README.md's configuration reference for the valid keys");
        }
        catch (InvalidOperationException e)
        {
            // Conversion failures name the key ("Failed to convert configuration value at 'Relay:Stun:Port'...");
            // for an enum the valid names say more than the converter's message.
            errors.Add(EnumProblem(section, target.GetType(), e)
                ?? (e.InnerException is null ? e.Message : $"{e.Message} ({e.InnerException.Message})"));
        }
    }

    /// <summary>"must be A, B or C": the names of an enum's values, as an operator may write them.</summary>
    public static string Choices(Type enumType) => Choices(Enum.GetNames(enumType));

    private static string Choices(string[] names) =>
        names.Length == 1 ? names[0] : string.Join(", ", names[..^1]) + " or " + names[^1];

    private static string? EnumProblem(IConfigurationSection section, Type optionsType, Exception exception)
    {
        // A list entry's failure comes wrapped ("...binding has failed... (Failed to convert ... at 'key' ...)").
        var match = Match.Empty;
        for (var e = exception; e is not null && !match.Success; e = e.InnerException)
        {
            match = FailedKey().Match(e.Message);
        }

        if (!match.Success)
        {
            return null;
        }

        var key = match.Groups["key"].Value;
        if (!key.StartsWith(section.Path + ":", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var relative = key[(section.Path.Length + 1)..];
        var type = TypeAt(optionsType, relative.Split(':'));
        return type is { IsEnum: true } ? $"{key}: must be {Choices(type)} (was '{section[relative]}')" : null;
    }

    // Follows a key's path (properties, list indexes) through the options type to the type bound at its end.
    private static Type? TypeAt(Type type, string[] path)
    {
        Type? current = type;
        foreach (var segment in path)
        {
            if (current is null)
            {
                return null;
            }

            var element = current.IsArray ? current.GetElementType() : ListElement(current);
            current = element ?? current.GetProperty(segment, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase)?.PropertyType;
        }

        return current is null ? null : Nullable.GetUnderlyingType(current) ?? current;
    }

    private static Type? ListElement(Type type) =>
        type != typeof(string) && typeof(IEnumerable).IsAssignableFrom(type)
            ? type.GetInterfaces().Append(type).FirstOrDefault(static i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IEnumerable<>))?.GetGenericArguments()[0]
            : null;

    [GeneratedRegex("at '(?<key>[^']+)'")]
    private static partial Regex FailedKey();
}

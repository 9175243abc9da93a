namespace Relay.Unit.Tests.Hygiene;

/// <summary>
/// No line of C# under src/ is longer than <see cref="MaxLength"/> characters, except the ones counted per
/// file in long-lines.txt, which may only shrink: a file may not gain a long line, and when a file loses
/// some its entry must be lowered (or removed), so the allowance never hides a new one. The compiler does
/// not enforce .editorconfig's max_line_length; this test does, for every build that runs the unit tier.
/// </summary>
public sealed class LineLengthTests
{
    public const int MaxLength = 160;

    [Fact]
    public void SourceLines_AreAtMost160Characters_OrAllowedInLongLinesTxt()
    {
        var root = RepositoryRoot();
        var allowed = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Hygiene", "long-lines.txt"))
            .Where(static l => l.Length > 0 && !l.StartsWith('#'))
            .Select(static l => l.Split(' '))
            .ToDictionary(static p => p[0], static p => int.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture), StringComparer.Ordinal);

        var problems = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(Path.Combine(root, "src"), "*.cs", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(root, file).Replace('\\', '/');
            if (relative.Contains("/obj/", StringComparison.Ordinal) || relative.Contains("/bin/", StringComparison.Ordinal))
            {
                continue;
            }

            var lines = File.ReadAllLines(file);
            var longLines = Enumerable.Range(0, lines.Length).Where(i => lines[i].Length > MaxLength).ToList();
            var allowance = allowed.GetValueOrDefault(relative);
            seen.Add(relative);
            if (longLines.Count > allowance)
            {
                problems.Add($"{relative}: {longLines.Count} lines over {MaxLength} characters, {allowance} allowed; "
                    + $"lines {string.Join(", ", longLines.Select(static i => i + 1))}");
            }
            else if (longLines.Count < allowance)
            {
                problems.Add($"{relative}: {longLines.Count} lines over {MaxLength} characters now; lower its entry in long-lines.txt to "
                    + $"\"{relative} {longLines.Count}\"" + (longLines.Count == 0 ? " (or remove it)" : string.Empty));
            }
        }

        problems.AddRange(allowed.Keys.Where(k => !seen.Contains(k)).Select(static k => $"{k}: no such file; remove its entry from long-lines.txt"));
        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "Relay.sln")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException("Relay.sln not found above " + AppContext.BaseDirectory);
    }
}

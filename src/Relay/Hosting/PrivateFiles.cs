using System.Text;

namespace Relay.Server.Hosting;

/// <summary>
/// Files and directories only the server's user may read (review L1): the data directory holds secret hashes,
/// command payloads and results. Modes are set when a file is created, never by a chmod after the secret is
/// written (a reader could open it in between).
/// </summary>
internal static class PrivateFiles
{
    /// <summary>rw-------.</summary>
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>rwx------.</summary>
    public const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>Bits that let someone other than the owner in.</summary>
    public const UnixFileMode GroupOrOther =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>Creates <paramref name="path"/> (and missing parents) as 0700; an existing directory keeps its mode.</summary>
    public static void CreateDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(path);
        }
        else
        {
            Directory.CreateDirectory(path, DirectoryMode);
        }
    }

    /// <summary>
    /// Makes sure a database file exists as 0600 before SQLite opens it (SQLite gives its -wal and -shm files
    /// the main file's mode), and takes group and other access away from an existing one and its companions.
    /// </summary>
    public static void PrepareDatabase(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        if (!File.Exists(path))
        {
            // An empty file is an empty SQLite database.
            using var created = new FileStream(path, new FileStreamOptions { Mode = System.IO.FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = FileMode });
            return;
        }

        foreach (var file in new[] { path, path + "-wal", path + "-shm", path + "-journal" })
        {
            if (File.Exists(file) && (File.GetUnixFileMode(file) & GroupOrOther) != 0)
            {
                File.SetUnixFileMode(file, File.GetUnixFileMode(file) & ~GroupOrOther);
            }
        }
    }

    /// <summary>Writes <paramref name="text"/> to a file created (or truncated) as 0600.</summary>
    public static void WriteAllText(string path, string text)
    {
        if (OperatingSystem.IsWindows())
        {
            File.WriteAllText(path, text);
            return;
        }

        if (File.Exists(path))
        {
            // An existing file keeps its mode on open: tighten it before anything is written.
            File.SetUnixFileMode(path, FileMode);
        }

        using var stream = new FileStream(path, new FileStreamOptions { Mode = System.IO.FileMode.Create, Access = FileAccess.Write, UnixCreateMode = FileMode });
        stream.Write(Encoding.UTF8.GetBytes(text));
    }
}

using System.Collections.Concurrent;

namespace Relay.Server.Primitives;

/// <summary>
/// How many of something each key holds now (connections per IP, queued messages per device), with a
/// per-key maximum, lock-free. An entry exists only while its count is above zero, so the table is bounded
/// by what is held, not by every key ever seen.
/// </summary>
internal sealed class KeyedCounter<TKey>(IEqualityComparer<TKey>? comparer = null)
    where TKey : notnull
{
    private readonly ConcurrentDictionary<TKey, int> _counts = new(comparer);

    /// <summary>Keys holding at least one.</summary>
    public int Keys => _counts.Count;

    /// <summary>What <paramref name="key"/> holds now.</summary>
    public int this[TKey key] => _counts.TryGetValue(key, out var count) ? count : 0;

    /// <summary>Counts one more for <paramref name="key"/>; false (nothing counted) when it already holds <paramref name="max"/>.</summary>
    public bool TryEnter(TKey key, int max)
    {
        while (true)
        {
            if (_counts.TryGetValue(key, out var count))
            {
                if (count >= max)
                {
                    return false;
                }

                if (_counts.TryUpdate(key, count + 1, count))
                {
                    return true;
                }
            }
            else if (max >= 1 && _counts.TryAdd(key, 1))
            {
                return true;
            }
            else if (max < 1)
            {
                return false;
            }
        }
    }

    /// <summary>Counts one less for <paramref name="key"/> (one <see cref="TryEnter"/> that returned true).</summary>
    public void Leave(TKey key)
    {
        while (_counts.TryGetValue(key, out var count))
        {
            if (count <= 1 ? _counts.TryRemove(new KeyValuePair<TKey, int>(key, count)) : _counts.TryUpdate(key, count - 1, count))
            {
                return;
            }
        }
    }
}

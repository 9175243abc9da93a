using System.Numerics;

namespace Relay.LoadGen;

/// <summary>
/// Log-linear histogram of microsecond values (32 sub-buckets per power of two, so ~3% error):
/// fixed size and allocation-free on the record path, cheap to merge across workers.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 5;
    private const int SubCount = 1 << SubBits;
    private const int BucketCount = 64 * SubCount;

    private readonly long[] _counts = new long[BucketCount];

    public long Count { get; private set; }

    public void Record(long micros)
    {
        _counts[IndexOf(micros < 0 ? 0 : (ulong)micros)]++;
        Count++;
    }

    public void Add(LatencyHistogram other)
    {
        for (var i = 0; i < BucketCount; i++)
        {
            _counts[i] += other._counts[i];
        }

        Count += other.Count;
    }

    /// <summary>Upper bound of the bucket holding the given quantile; 0 when empty.</summary>
    public long Percentile(double quantile)
    {
        if (Count == 0)
        {
            return 0;
        }

        var rank = (long)Math.Ceiling(quantile * Count);
        if (rank < 1)
        {
            rank = 1;
        }

        long seen = 0;
        for (var i = 0; i < BucketCount; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
            {
                return UpperBound(i);
            }
        }

        return UpperBound(BucketCount - 1);
    }

    private static int IndexOf(ulong value)
    {
        if (value < 2 * SubCount)
        {
            return (int)value;
        }

        var shift = BitOperations.Log2(value) - SubBits;
        return ((shift + 1) * SubCount) + (int)((value >> shift) - SubCount);
    }

    private static long UpperBound(int index)
    {
        if (index < 2 * SubCount)
        {
            return index;
        }

        var shift = (index / SubCount) - 1;
        var mantissa = (long)((index % SubCount) + SubCount);
        return ((mantissa + 1) << shift) - 1;
    }
}

using BenchmarkDotNet.Running;

namespace Relay.Benchmarks;

/// <summary>
/// Codec micro-benchmarks. Run everything, briefly:
/// <c>dotnet run -c Release --project bench/Relay.Benchmarks -- --filter '*' --job short</c>
/// </summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}

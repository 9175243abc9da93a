using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// A NAT lab built from Linux network namespaces (docs/natlab.md, ARCHITECTURE.md section 6):
/// <code>
///  root ns: rl{pid}h{n} 198.18.0.254 ─┐
///                                      │ bridge br0 in {prefix}pub (198.18.0.0/24, "the Internet")
///  {prefix}srv: eth0 198.18.0.1 + .2 ─┤
///  {prefix}r1:  wan 198.18.0.11 ──────┤  lan 10.0.1.1 ── {prefix}c1: eth0 10.0.1.2 (default via 10.0.1.1)
///  {prefix}r2:  wan 198.18.0.12 ──────┘  lan 10.0.2.1 ── {prefix}c2: eth0 10.0.2.2
/// </code>
/// Each router runs the nftables ruleset of its <see cref="NatType"/> (<see cref="NatRules"/>). The test
/// process reaches the public segment (and so the server's listeners) through the root veth; every
/// address is the lab's own. Dispose kills every process the lab started and deletes every namespace
/// and link, whether the test passed or not; creating a lab first sweeps what a killed run left behind.
/// Only one lab exists at a time on a machine (they share 198.18.0.0/24 in the root namespace): tests
/// that build one belong to <see cref="NatLabCollection"/>.
/// </summary>
public sealed partial class NatLab : IAsyncDisposable
{
    /// <summary>Every lab namespace's name starts with this, then the creating process id.</summary>
    public const string Prefix = "rlab";

    /// <summary>The server namespace's primary public address.</summary>
    public const string ServerAddress = "198.18.0.1";

    /// <summary>The server namespace's second public address (RFC 5780 OTHER-ADDRESS).</summary>
    public const string ServerAlternateAddress = "198.18.0.2";

    /// <summary>The test process's own address on the public segment (root namespace).</summary>
    public const string HostAddress = "198.18.0.254";

    // RFC 2544's benchmarking range, never routed on the Internet. Not TEST-NET-3 (203.0.113.0/24): on the
    // machines we run on, the package mirrors (NuGet, Debian, npm) resolve into it, and the lab's route
    // in the root namespace would cut them off for as long as a lab exists.

    /// <summary>The lab's public segment ("the Internet"): the server, the routers' WAN side, the host.</summary>
    public const string PublicNetwork = "198.18.0.0/24";
    private const int MaxSites = 200;

    private static readonly HashSet<string> s_live = [];
    private static int s_counter;
    private static readonly Lazy<string?> s_skipReason = new(ComputeSkipReason);

    private readonly List<ToolProcess> _processes = [];
    private readonly Lock _gate = new();
    private readonly List<string> _namespaces = [];
    private readonly Dictionary<int, int> _peerSetTimeouts = [];
    private bool _hostLinkCreated;
    private bool _disposed;

    private NatLab(string prefix, string hostLink, IReadOnlyList<NatType> types)
    {
        NamePrefix = prefix;
        HostLink = hostLink;
        PublicNamespace = prefix + "pub";
        ServerNamespace = prefix + "srv";
        Sites = [.. types.Select((type, i) => new NatSite(i + 1, type, $"{prefix}r{i + 1}", $"{prefix}c{i + 1}"))];
    }

    /// <summary>Why NAT lab tests cannot run here, or null when they can (root, Linux, ip, nft, conntrack, python3).</summary>
    public static string? SkipReason => s_skipReason.Value;

    /// <summary>This lab's namespace name prefix: <c>rlab{pid}-{counter}-</c>.</summary>
    public string NamePrefix { get; }

    /// <summary>The root namespace end of the veth into the public segment (at most 15 characters).</summary>
    public string HostLink { get; }

    /// <summary>The namespace that holds the public bridge.</summary>
    public string PublicNamespace { get; }

    /// <summary>The server namespace: <see cref="ServerAddress"/> and <see cref="ServerAlternateAddress"/> on eth0.</summary>
    public string ServerNamespace { get; }

    /// <summary>One router and client per NAT type, in the order given to <see cref="CreateAsync(NatType[])"/>.</summary>
    public IReadOnlyList<NatSite> Sites { get; }

    /// <summary>Every namespace of the lab, for sweeping checks.</summary>
    public IReadOnlyList<string> Namespaces => [PublicNamespace, ServerNamespace, .. Sites.SelectMany(s => new[] { s.RouterNamespace, s.ClientNamespace })];

    /// <summary>Builds a lab with one router and client per entry of <paramref name="nats"/>.</summary>
    public static Task<NatLab> CreateAsync(params NatType[] nats) => CreateAsync((IReadOnlyList<NatType>)nats);

    /// <inheritdoc cref="CreateAsync(NatType[])"/>
    public static async Task<NatLab> CreateAsync(IReadOnlyList<NatType> nats)
    {
        if (SkipReason is { } reason)
        {
            throw new InvalidOperationException(reason);
        }

        if (nats.Count > MaxSites)
        {
            throw new ArgumentOutOfRangeException(nats.Count.ToString(CultureInfo.InvariantCulture), $"at most {MaxSites} NATs: site n takes 198.18.0.(10+n)");
        }

        await SweepStaleAsync();
        var pid = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        var id = Interlocked.Increment(ref s_counter).ToString(CultureInfo.InvariantCulture);
        var lab = new NatLab($"{Prefix}{pid}-{id}-", $"rl{pid}h{id}", nats);
        lock (s_live)
        {
            s_live.Add(lab.NamePrefix);
        }

        try
        {
            await lab.BuildAsync();
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }

        return lab;
    }

    /// <summary>Runs a short command in <paramref name="ns"/> (<c>ip netns exec</c>) and returns what it printed.</summary>
    public Task<LabResult> RunAsync(string ns, string exe, params string[] args) => RunAsync(ns, exe, args, null);

    /// <inheritdoc cref="RunAsync(string, string, string[])"/>
    public Task<LabResult> RunAsync(string ns, string exe, IReadOnlyList<string> args, TimeSpan? timeout)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return LabShell.RunAsync(IpPath, ["netns", "exec", ns, ResolveProgram(exe), .. args], timeout: timeout);
    }

    /// <summary>
    /// Starts a long-running process in <paramref name="ns"/>; the lab kills it at dispose at the latest
    /// (a process left inside a namespace would keep it alive after <c>ip netns del</c>). With
    /// <paramref name="keepInputOpen"/> its stdin stays open for <see cref="ToolProcess.WriteLineAsync"/>.
    /// </summary>
    public ToolProcess Start(string ns, string exe, IEnumerable<string> args, TimeSpan? lifetime = null, string? workingDirectory = null, bool keepInputOpen = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var process = ToolProcess.Start(IpPath, ["netns", "exec", ns, ResolveProgram(exe), .. args], lifetime ?? TimeSpan.FromMinutes(5), workingDirectory, keepInputOpen: keepInputOpen);
        lock (_gate)
        {
            _processes.Add(process);
        }

        return process;
    }

    /// <summary>Sets a sysctl inside one namespace (e.g. <c>net.netfilter.nf_conntrack_udp_timeout</c>).</summary>
    public async Task SetSysctlAsync(string ns, string key, string value) =>
        await LabShell.MustAsync(IpPath, ["netns", "exec", ns, SysctlPath, "-qw", $"{key}={value}"]);

    /// <summary>
    /// The router's conntrack UDP timeouts (both the unreplied and the "stream" one, so a mapping that
    /// saw traffic both ways expires after the same idle time). For an address-restricted router the
    /// ruleset is reloaded so its peer set forgets as fast as conntrack does.
    /// </summary>
    public async Task SetUdpTimeoutAsync(NatSite site, int seconds)
    {
        var text = seconds.ToString(CultureInfo.InvariantCulture);
        await SetSysctlAsync(site.RouterNamespace, "net.netfilter.nf_conntrack_udp_timeout", text);
        await SetSysctlAsync(site.RouterNamespace, "net.netfilter.nf_conntrack_udp_timeout_stream", text);
        if (site.Type == NatType.AddressRestricted)
        {
            _peerSetTimeouts[site.Index] = seconds;
            await LoadRulesAsync(site);
        }
    }

    /// <summary>The router's conntrack timeout for established TCP connections (default 5 days).</summary>
    public Task SetTcpEstablishedTimeoutAsync(NatSite site, int seconds) =>
        SetSysctlAsync(site.RouterNamespace, "net.netfilter.nf_conntrack_tcp_timeout_established", seconds.ToString(CultureInfo.InvariantCulture));

    /// <summary>The router's conntrack table (<c>conntrack -L</c>), one line per entry, optionally one protocol only.</summary>
    public async Task<IReadOnlyList<string>> ConntrackAsync(NatSite site, string? protocol = null)
    {
        var result = await LabShell.RunAsync(IpPath, ["netns", "exec", site.RouterNamespace, ConntrackPath, "-L", .. protocol is null ? Array.Empty<string>() : ["-p", protocol]]);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException("NAT lab: conntrack -L failed\n" + result);
        }

        return [.. result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
    }

    /// <summary>Packets counted so far by one of the router's named counters (<c>input_drops</c>, <c>forward_drops</c>, <c>udp_drops</c>).</summary>
    public async Task<long> CounterAsync(NatSite site, string counter)
    {
        var result = await LabShell.MustAsync(IpPath, ["netns", "exec", site.RouterNamespace, NftPath, "list", "counter", "ip", NatRules.Table, counter]);
        var match = PacketsPattern().Match(result.Stdout);
        return match.Success ? long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : throw new InvalidOperationException("NAT lab: no packet count in\n" + result);
    }

    /// <summary>Every router's ruleset (with counters and sets) and conntrack table: for failure messages.</summary>
    public async Task<string> DescribeAsync()
    {
        var text = new StringBuilder();
        foreach (var site in Sites)
        {
            text.Append(CultureInfo.InvariantCulture, $"== {site.RouterNamespace} ({site.Type}, wan {site.WanAddress})\n");
            text.Append((await LabShell.RunAsync(IpPath, ["netns", "exec", site.RouterNamespace, NftPath, "list", "ruleset"])).Stdout);
            text.Append((await LabShell.RunAsync(IpPath, ["netns", "exec", site.RouterNamespace, ConntrackPath, "-L"])).Stdout);
        }

        return text.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        List<ToolProcess> processes;
        lock (_gate)
        {
            processes = [.. _processes];
        }

        var failures = new List<string>();
        foreach (var process in processes)
        {
            // Idempotent: a test may have disposed it already.
            await process.DisposeAsync();
        }

        // Deleting the root link is synchronous; the namespaces' own teardown is not, and the root
        // namespace's route to 198.18.0.0/24 must be gone before the next lab is built.
        if (_hostLinkCreated)
        {
            var link = await LabShell.RunAsync(IpPath, ["link", "del", HostLink]);
            if (!link.Succeeded && !link.Stderr.Contains("Cannot find device", StringComparison.Ordinal))
            {
                failures.Add(link.ToString());
            }
        }

        foreach (var ns in Enumerable.Reverse(_namespaces))
        {
            var deleted = await LabShell.RunAsync(IpPath, ["netns", "del", ns]);
            if (!deleted.Succeeded)
            {
                failures.Add(deleted.ToString());
            }
        }

        lock (s_live)
        {
            s_live.Remove(NamePrefix);
        }

        if (failures.Count > 0)
        {
            throw new InvalidOperationException("NAT lab: cleanup failed\n" + string.Join('\n', failures));
        }
    }

    /// <summary>Names of the lab namespaces that exist now, this process's and others'.</summary>
    public static async Task<IReadOnlyList<string>> ListLabNamespacesAsync()
    {
        var result = await LabShell.MustAsync(IpPath, ["netns", "list"]);
        return [.. result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(static line => line.Split(' ', 2)[0])
            .Where(static name => name.StartsWith(Prefix, StringComparison.Ordinal))];
    }

    /// <summary>
    /// Deletes the namespaces and root links of labs whose process is gone (a killed test run cannot
    /// dispose). A live process's lab is left alone.
    /// </summary>
    public static async Task SweepStaleAsync()
    {
        foreach (var ns in await ListLabNamespacesAsync())
        {
            var match = NamespacePattern().Match(ns);
            if (match.Success && !IsLive(ns, match.Groups[1].Value))
            {
                await LabShell.RunAsync(IpPath, ["netns", "del", ns]);
            }
        }

        var links = await LabShell.MustAsync(IpPath, ["-o", "link", "show"]);
        foreach (Match match in HostLinkPattern().Matches(links.Stdout))
        {
            var name = match.Groups[1].Value;
            if (!IsLive($"{Prefix}{match.Groups[2].Value}-{match.Groups[3].Value}-pub", match.Groups[2].Value))
            {
                await LabShell.RunAsync(IpPath, ["link", "del", name]);
            }
        }
    }

    private static bool IsAlive(string pid) => Directory.Exists("/proc/" + pid);

    // A lab of this very process whose dispose never ran (or failed) is as stale as a dead process's.
    private static bool IsLive(string ns, string pid)
    {
        if (pid != Environment.ProcessId.ToString(CultureInfo.InvariantCulture))
        {
            return IsAlive(pid);
        }

        lock (s_live)
        {
            return s_live.Any(prefix => ns.StartsWith(prefix, StringComparison.Ordinal));
        }
    }

    private async Task BuildAsync()
    {
        var busy = await LabShell.MustAsync(IpPath, ["-o", "-4", "addr", "show", "to", PublicNetwork]);
        if (busy.Stdout.Trim().Length > 0)
        {
            throw new InvalidOperationException($"NAT lab: the root namespace already has an address in {PublicNetwork} (another lab is running, or the address is in use):\n{busy.Stdout}");
        }

        await AddNamespaceAsync(PublicNamespace);
        await IpAsync(PublicNamespace, "link", "add", "name", "br0", "type", "bridge");
        await IpAsync(PublicNamespace, "link", "set", "br0", "up");

        await AddNamespaceAsync(ServerNamespace);
        await PlugIntoPublicAsync(ServerNamespace, "eth0", "srv", ServerAddress, ServerAlternateAddress);

        foreach (var site in Sites)
        {
            await AddNamespaceAsync(site.RouterNamespace);
            await AddNamespaceAsync(site.ClientNamespace);
            await PlugIntoPublicAsync(site.RouterNamespace, "wan", "r" + site.Index.ToString(CultureInfo.InvariantCulture), site.WanAddress);
            await IpAsync(site.RouterNamespace, "link", "add", "name", "lan", "type", "veth", "peer", "name", "eth0", "netns", site.ClientNamespace);
            await IpAsync(site.RouterNamespace, "addr", "add", site.LanAddress + "/24", "dev", "lan");
            await IpAsync(site.RouterNamespace, "link", "set", "lan", "up");
            await IpAsync(site.ClientNamespace, "addr", "add", site.ClientAddress + "/24", "dev", "eth0");
            await IpAsync(site.ClientNamespace, "link", "set", "eth0", "up");
            await IpAsync(site.ClientNamespace, "route", "add", "default", "via", site.LanAddress);
            await SetSysctlAsync(site.RouterNamespace, "net.ipv4.ip_forward", "1");
            await LoadRulesAsync(site);
        }

        // The root end: the one link in a shared namespace, so its name carries pid and counter.
        await LabShell.MustAsync(IpPath, ["link", "add", "name", HostLink, "type", "veth", "peer", "name", "host", "netns", PublicNamespace]);
        _hostLinkCreated = true;
        await LabShell.MustAsync(SysctlPath, ["-qw", $"net.ipv6.conf.{HostLink}.disable_ipv6=1"]);
        await IpAsync(PublicNamespace, "link", "set", "host", "master", "br0", "up");
        await LabShell.MustAsync(IpPath, ["addr", "add", HostAddress + "/24", "dev", HostLink]);
        await LabShell.MustAsync(IpPath, ["link", "set", HostLink, "up"]);
    }

    private async Task AddNamespaceAsync(string ns)
    {
        await LabShell.MustAsync(IpPath, ["netns", "add", ns]);
        _namespaces.Add(ns);

        // No IPv6 anywhere in the lab: no router solicitations or MLD reports on the links, and
        // nothing the IPv4-only rulesets would let through unfiltered.
        await SetSysctlAsync(ns, "net.ipv6.conf.all.disable_ipv6", "1");
        await SetSysctlAsync(ns, "net.ipv6.conf.default.disable_ipv6", "1");
        await IpAsync(ns, "link", "set", "lo", "up");
    }

    private async Task PlugIntoPublicAsync(string ns, string device, string bridgePort, params string[] addresses)
    {
        await IpAsync(ns, "link", "add", "name", device, "type", "veth", "peer", "name", bridgePort, "netns", PublicNamespace);
        await IpAsync(PublicNamespace, "link", "set", bridgePort, "master", "br0", "up");
        foreach (var address in addresses)
        {
            await IpAsync(ns, "addr", "add", address + "/24", "dev", device);
        }

        await IpAsync(ns, "link", "set", device, "up");
    }

    private async Task LoadRulesAsync(NatSite site)
    {
        var timeout = _peerSetTimeouts.TryGetValue(site.Index, out var seconds) ? seconds : 120;
        await LabShell.MustAsync(IpPath, ["netns", "exec", site.RouterNamespace, NftPath, "flush", "ruleset"]);
        await LabShell.MustAsync(IpPath, ["netns", "exec", site.RouterNamespace, NftPath, "-f", "-"], NatRules.For(site, timeout));
    }

    private static Task<LabResult> IpAsync(string ns, params string[] arguments) => LabShell.MustAsync(IpPath, ["-n", ns, .. arguments]);

    private static string ResolveProgram(string exe) => exe.Contains('/', StringComparison.Ordinal) ? exe : LabShell.Require(exe);

    private static string IpPath => LabShell.Require("ip");

    private static string NftPath => LabShell.Require("nft");

    private static string ConntrackPath => LabShell.Require("conntrack");

    private static string SysctlPath => LabShell.Require("sysctl");

    private static string? ComputeSkipReason()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "NAT lab: needs Linux network namespaces";
        }

        if (!Environment.IsPrivilegedProcess)
        {
            return "NAT lab: needs root (it creates network namespaces and nftables rules); CI runs it as root";
        }

        foreach (var (tool, package) in new[] { ("ip", "iproute2"), ("nft", "nftables"), ("conntrack", "conntrack"), ("sysctl", "procps") })
        {
            if (LabShell.Find(tool) is null)
            {
                return $"NAT lab: {tool} is missing (apt-get install {package}; ./test.sh installs it)";
            }
        }

        return File.Exists("/usr/bin/python3") ? null : "NAT lab: /usr/bin/python3 is missing";
    }

    [GeneratedRegex(@"^rlab(\d+)-\d+-")]
    private static partial Regex NamespacePattern();

    [GeneratedRegex(@"^\d+: (rl(\d+)h(\d+))[@:]", RegexOptions.Multiline)]
    private static partial Regex HostLinkPattern();

    [GeneratedRegex(@"packets (\d+)")]
    private static partial Regex PacketsPattern();
}

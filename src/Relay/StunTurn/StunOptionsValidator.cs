using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Options;
using Relay.Rendezvous.Stun;
using Relay.Server.Hosting;

namespace Relay.Server.StunTurn;

/// <summary>
/// Checks <c>Relay:Stun</c>, and that <c>Relay:Http:Port</c> stays off the STUN ports. Every message starts
/// with the full key, so an operator can find the line to fix.
/// </summary>
internal sealed class StunOptionsValidator(IOptions<HttpOptions> http) : IValidateOptions<StunOptions>
{
    public ValidateOptionsResult Validate(string? name, StunOptions stun)
    {
        var errors = new List<string>();
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"{key}: {problem}");
            }
        }

        static bool IsPort(int port) => ListenAddresses.IsPort(port);

        Check(IsPort(stun.Port), "Relay:Stun:Port", $"must be a port between 1 and 65535 (was {stun.Port})");
        Check(IsPort(stun.TlsPort), "Relay:Stun:TlsPort", $"must be a port between 1 and 65535 (was {stun.TlsPort})");
        Check(stun.TlsPort != stun.Port, "Relay:Stun:TlsPort", $"must differ from Relay:Stun:Port (both are {stun.Port}; TCP and TLS cannot share a port)");
        if (http.TryGetValid(out var httpOptions))
        {
            Check(httpOptions.Port != stun.Port && httpOptions.Port != stun.TlsPort, "Relay:Http:Port", $"must differ from the STUN ports (was {httpOptions.Port})");
        }

        Check(stun.AlternatePort == 0 || IsPort(stun.AlternatePort), "Relay:Stun:AlternatePort", $"must be 0 (Port + 1) or a port between 1 and 65535 (was {stun.AlternatePort})");
        Check(stun.MaxMessageSize is >= 576 and <= 65535, "Relay:Stun:MaxMessageSize", $"must be between 576 and 65535 bytes (was {stun.MaxMessageSize})");
        Check(stun.UdpBatchSize is >= 0 and <= 1024, "Relay:Stun:UdpBatchSize", $"must be between 0 (portable path) and 1024 (was {stun.UdpBatchSize})");
        Check(stun.UdpReceiveLoops is >= 0 and <= 64, "Relay:Stun:UdpReceiveLoops", $"must be between 0 (one per CPU) and 64 (was {stun.UdpReceiveLoops})");
        Check(Encoding.UTF8.GetByteCount(stun.Software ?? string.Empty) <= 763, "Relay:Stun:Software", "must be at most 763 bytes of UTF-8 (RFC 8489 §14.14)");
        Check(stun.RateLimit.RequestsPerSecond >= 1, "Relay:Stun:RateLimit:RequestsPerSecond", $"must be at least 1 (was {stun.RateLimit.RequestsPerSecond}); set Relay:Stun:RateLimit:Enabled=false to turn the limit off");
        Check(stun.RateLimit.Burst >= 1, "Relay:Stun:RateLimit:Burst", $"must be at least 1 (was {stun.RateLimit.Burst})");
        Check(stun.RateLimit.MaxTrackedSources is >= 16 and <= 16_777_216, "Relay:Stun:RateLimit:MaxTrackedSources", $"must be between 16 and 16777216 (was {stun.RateLimit.MaxTrackedSources})");
        Check(stun.Tcp.MaxConnectionsPerIp >= 1, "Relay:Stun:Tcp:MaxConnectionsPerIp", $"must be at least 1 (was {stun.Tcp.MaxConnectionsPerIp})");
        Check(stun.Tcp.IdleTimeoutSeconds >= 1, "Relay:Stun:Tcp:IdleTimeoutSeconds", $"must be at least 1 (was {stun.Tcp.IdleTimeoutSeconds})");
        Check(stun.Tcp.MessageTimeoutSeconds is >= 1 and <= 3600, "Relay:Stun:Tcp:MessageTimeoutSeconds", $"must be between 1 and 3600 (was {stun.Tcp.MessageTimeoutSeconds})");
        Check(stun.Tcp.MaxConnections >= 1, "Relay:Stun:Tcp:MaxConnections", $"must be at least 1 (was {stun.Tcp.MaxConnections})");
        ListenAddresses.Validate(stun.ListenAddresses, "Relay:Stun:ListenAddresses", errors);
        ValidateAlternate(stun, errors, Check);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void ValidateAlternate(StunOptions stun, List<string> errors, Action<bool, string, string> check)
    {
        if (string.IsNullOrWhiteSpace(stun.AlternateAddress))
        {
            return;
        }

        if (!IPAddress.TryParse(stun.AlternateAddress, out var alternate))
        {
            errors.Add($"Relay:Stun:AlternateAddress: '{stun.AlternateAddress}' is not an IP address");
            return;
        }

        check(stun.EffectiveAlternatePort != stun.Port && ListenAddresses.IsPort(stun.EffectiveAlternatePort), "Relay:Stun:AlternatePort", $"must be a port other than Relay:Stun:Port (resolved to {stun.EffectiveAlternatePort})");
        var primary = stun.ListenAddresses
            .Select(static text => IPAddress.TryParse(text, out var address) ? address : null)
            .FirstOrDefault(address => address is not null && address.AddressFamily == alternate.AddressFamily);

        // RFC 5780 needs to know which address a request arrived on; a wildcard socket cannot say.
        check(primary is not null && !primary.Equals(IPAddress.Any) && !primary.Equals(IPAddress.IPv6Any), "Relay:Stun:AlternateAddress",
            $"needs Relay:Stun:ListenAddresses to name a specific primary {(alternate.AddressFamily == AddressFamily.InterNetwork ? "IPv4" : "IPv6")} address (RFC 5780 binds primary and alternate addresses separately)");
        check(primary is null || !primary.Equals(alternate), "Relay:Stun:AlternateAddress", "must differ from the primary listen address");
    }
}

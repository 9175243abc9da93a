using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary>Checks <c>Relay</c> (the keys not owned by one service).</summary>
internal sealed class RelayOptionsValidator : IValidateOptions<RelayOptions>
{
    public ValidateOptionsResult Validate(string? name, RelayOptions options) =>
        string.IsNullOrWhiteSpace(options.DataDirectory) ? ValidateOptionsResult.Fail("Relay:DataDirectory: must not be empty") : ValidateOptionsResult.Success;
}

/// <summary>Checks <c>Relay:Http</c>. Clashes with other listeners' ports are checked by those listeners' validators.</summary>
internal sealed class HttpOptionsValidator : IValidateOptions<HttpOptions>
{
    public ValidateOptionsResult Validate(string? name, HttpOptions options)
    {
        var errors = new List<string>();
        if (!ListenAddresses.IsPort(options.Port))
        {
            errors.Add($"Relay:Http:Port: must be a port between 1 and 65535 (was {options.Port})");
        }

        if (options.TlsPort != 0 && !ListenAddresses.IsPort(options.TlsPort))
        {
            errors.Add($"Relay:Http:TlsPort: must be 0 (off) or a port between 1 and 65535 (was {options.TlsPort})");
        }
        else if (options.TlsPort == options.Port)
        {
            errors.Add($"Relay:Http:TlsPort: must differ from Relay:Http:Port (both are {options.Port})");
        }

        ListenAddresses.Validate(options.ListenAddresses, "Relay:Http:ListenAddresses", errors);
        if (options.MaxConnections < 1)
        {
            errors.Add($"Relay:Http:MaxConnections: must be at least 1 (was {options.MaxConnections})");
        }

        if (options.MaxConnectionsPerIp < 1)
        {
            errors.Add($"Relay:Http:MaxConnectionsPerIp: must be at least 1 (was {options.MaxConnectionsPerIp})");
        }

        if (options.RequestHeadersTimeoutSeconds is < 1 or > 600)
        {
            errors.Add($"Relay:Http:RequestHeadersTimeoutSeconds: must be 1..600 (was {options.RequestHeadersTimeoutSeconds})");
        }

        if (options.MaxRequestBodyBytes is < 1024 or > 1L << 30)
        {
            errors.Add($"Relay:Http:MaxRequestBodyBytes: must be 1024..1073741824 (was {options.MaxRequestBodyBytes})");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Checks <c>Relay:Tls</c>: both paths or neither, and a certificate and key that load.</summary>
internal sealed class TlsOptionsValidator : IValidateOptions<TlsOptions>
{
    public ValidateOptionsResult Validate(string? name, TlsOptions options)
    {
        var errors = new List<string>();
        ServerCertificate.TryLoad(options, errors, TimeProvider.System, rejectExpired: false)?.Dispose();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

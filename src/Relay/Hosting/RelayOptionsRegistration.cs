using System.Runtime.CompilerServices;
using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary>
/// How every feature registers its options: bound from its own section (strictly: unknown keys are errors),
/// checked by the feature's <see cref="IValidateOptions{TOptions}"/>, and validated on start, so a bad
/// configuration stops the process with every problem listed before anything listens.
/// </summary>
internal static class RelayOptionsRegistration
{
    /// <summary>
    /// Binds <typeparamref name="TOptions"/> to <paramref name="section"/> and validates it on start. Binding
    /// problems are reported as validation failures (one line per key), never thrown from the binder.
    /// </summary>
    public static OptionsBuilder<TOptions> AddRelayOptions<TOptions>(this IServiceCollection services, IConfiguration configuration, string section, bool strict = true)
        where TOptions : class =>
        services.AddRelayOptions<TOptions>(configuration, section, (s, options, errors) => StrictBinder.Bind(s, options, strict, errors));

    /// <summary>As above, with a binder of the feature's own (e.g. one that binds each entry of a list separately).</summary>
    public static OptionsBuilder<TOptions> AddRelayOptions<TOptions>(this IServiceCollection services, IConfiguration configuration, string section, Action<IConfigurationSection, TOptions, List<string>> bind)
        where TOptions : class
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        var binding = new SectionBinding<TOptions>(configuration.GetSection(section), bind);
        services.AddSingleton<IConfigureOptions<TOptions>>(binding);
        services.AddSingleton<IValidateOptions<TOptions>>(binding);
        return services.AddOptions<TOptions>().ValidateOnStart();
    }

    /// <summary>
    /// Registers the bound and validated <typeparamref name="TOptions"/> object itself, for constructors that take
    /// it rather than <see cref="IOptions{TOptions}"/>.
    /// </summary>
    public static IServiceCollection AddBoundOptions<TOptions>(this IServiceCollection services)
        where TOptions : class =>
        services.AddSingleton(static sp => sp.GetRequiredService<IOptions<TOptions>>().Value);

    /// <summary>
    /// Runs the start-up validation now (the host would run it again, from its cache, when it starts) and turns
    /// its failures into one <see cref="RelayConfigurationException"/> listing every problem.
    /// </summary>
    public static void ValidateRelayConfiguration(this IServiceProvider services)
    {
        ArgumentNullException.ThrowIfNull(services);
        try
        {
            services.GetRequiredService<IStartupValidator>().Validate();
        }
        catch (Exception e) when (e is OptionsValidationException or AggregateException)
        {
            throw RelayConfigurationException.FromValidation(e);
        }
    }

    /// <summary>
    /// Reads another section's options for a cross-section check; false when that section is itself invalid
    /// (its own validation reports it, and the check is skipped rather than reported twice).
    /// </summary>
    public static bool TryGetValid<TOptions>(this IOptions<TOptions> options, out TOptions value)
        where TOptions : class
    {
        ArgumentNullException.ThrowIfNull(options);
        try
        {
            value = options.Value;
            return true;
        }
        catch (OptionsValidationException)
        {
            value = null!;
            return false;
        }
    }

    /// <summary>Binds when the options are created and reports what the binder could not take.</summary>
    private sealed class SectionBinding<TOptions>(IConfigurationSection section, Action<IConfigurationSection, TOptions, List<string>> bind) : IConfigureOptions<TOptions>, IValidateOptions<TOptions>
        where TOptions : class
    {
        // Per options instance: each cache (IOptions, IOptionsMonitor) creates its own, configure then validate.
        private readonly ConditionalWeakTable<TOptions, List<string>> _problems = [];

        public void Configure(TOptions options)
        {
            var errors = new List<string>();
            bind(section, options, errors);
            _problems.AddOrUpdate(options, errors);
        }

        public ValidateOptionsResult Validate(string? name, TOptions options) =>
            _problems.TryGetValue(options, out var errors) && errors.Count > 0 ? ValidateOptionsResult.Fail(errors) : ValidateOptionsResult.Success;
    }
}

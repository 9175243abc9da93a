using Xunit.Abstractions;
using Xunit.Sdk;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// Marks a broker implementation whose tests cannot pass yet: every <see cref="BrokerFactAttribute"/> and
/// <see cref="BrokerTheoryAttribute"/> test of a class generic over that broker is reported as skipped with
/// this reason. Removing the one attribute line on the broker class enables all of them.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class SkipBrokerAttribute(string reason) : Attribute
{
    public string Reason { get; } = reason;

    /// <summary>The skip reason for a concrete test class, found on the broker type it is generic over.</summary>
    internal static string? For(Type testClass)
    {
        for (var type = testClass; type is not null; type = type.BaseType)
        {
            if (!type.IsGenericType)
            {
                continue;
            }

            foreach (var argument in type.GetGenericArguments())
            {
                if (argument.GetCustomAttributes(typeof(SkipBrokerAttribute), inherit: false).FirstOrDefault() is SkipBrokerAttribute skip)
                {
                    return skip.Reason;
                }
            }
        }

        return null;
    }
}

/// <summary>A fact that runs once per broker-under-test class and honours <see cref="SkipBrokerAttribute"/>.</summary>
[XunitTestCaseDiscoverer("Relay.Server.Tests.Mqtt.Interop.BrokerFactDiscoverer", "Relay.Server.Tests")]
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class BrokerFactAttribute : FactAttribute;

/// <summary>A theory that runs once per broker-under-test class and honours <see cref="SkipBrokerAttribute"/>.</summary>
[XunitTestCaseDiscoverer("Relay.Server.Tests.Mqtt.Interop.BrokerTheoryDiscoverer", "Relay.Server.Tests")]
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class BrokerTheoryAttribute : TheoryAttribute;

public sealed class BrokerFactDiscoverer(IMessageSink diagnosticMessageSink) : FactDiscoverer(diagnosticMessageSink)
{
    private readonly IMessageSink _sink = diagnosticMessageSink;

    public override IEnumerable<IXunitTestCase> Discover(ITestFrameworkDiscoveryOptions discoveryOptions, ITestMethod testMethod, IAttributeInfo factAttribute)
        => BrokerSkip.Apply(_sink, discoveryOptions, testMethod) ?? base.Discover(discoveryOptions, testMethod, factAttribute);
}

public sealed class BrokerTheoryDiscoverer(IMessageSink diagnosticMessageSink) : TheoryDiscoverer(diagnosticMessageSink)
{
    private readonly IMessageSink _sink = diagnosticMessageSink;

    public override IEnumerable<IXunitTestCase> Discover(ITestFrameworkDiscoveryOptions discoveryOptions, ITestMethod testMethod, IAttributeInfo theoryAttribute)
        => BrokerSkip.Apply(_sink, discoveryOptions, testMethod) ?? base.Discover(discoveryOptions, testMethod, theoryAttribute);
}

internal static class BrokerSkip
{
    public static IXunitTestCase[]? Apply(IMessageSink sink, ITestFrameworkDiscoveryOptions options, ITestMethod testMethod)
    {
        var reason = SkipBrokerAttribute.For(testMethod.TestClass.Class.ToRuntimeType());
        return reason is null
            ? null
            : [new XunitSkippedDataRowTestCase(sink, options.MethodDisplayOrDefault(), options.MethodDisplayOptionsOrDefault(), testMethod, reason)];
    }
}

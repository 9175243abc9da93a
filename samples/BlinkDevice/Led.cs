using System.Globalization;
using Microsoft.Extensions.Logging;

namespace BlinkDevice;

/// <summary>
/// The LED the sample blinks. Linux exposes on-board LEDs (a Raspberry Pi's ACT LED) under
/// /sys/class/leds and, on kernels built with CONFIG_GPIO_SYSFS, GPIO lines under /sys/class/gpio:
/// both are plain files, so the sample needs no native library and stays trimming-safe.
/// </summary>
internal abstract class Led : IDisposable
{
    public abstract string Description { get; }

    public bool IsOn { get; private set; }

    public static Led Open(string? spec, ILogger log)
    {
        if (string.IsNullOrEmpty(spec))
        {
            return new ConsoleLed(log);
        }

        try
        {
            if (spec.StartsWith("gpio:", StringComparison.Ordinal))
            {
                return SysfsGpioLed.Open(int.Parse(spec.AsSpan(5), CultureInfo.InvariantCulture));
            }

            return SysfsLed.Open(spec);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            // A device without the LED still answers commands; say why nothing lights up.
            log.LogWarning("LED {Spec} unavailable ({Message}); printing instead", spec, e.Message);
            return new ConsoleLed(log);
        }
    }

    public void Set(bool on)
    {
        Write(on);
        IsOn = on;
    }

    public virtual void Dispose()
    {
    }

    protected abstract void Write(bool on);

    private sealed class ConsoleLed(ILogger log) : Led
    {
        public override string Description => "console (no LED configured)";

        protected override void Write(bool on) => log.LogInformation(on ? "LED on" : "LED off");
    }

    /// <summary>/sys/class/leds/NAME: trigger "none" hands the LED to us, brightness max/0 drives it.</summary>
    private sealed class SysfsLed(string directory, string onValue) : Led
    {
        public override string Description => directory;

        public static SysfsLed Open(string directory)
        {
            var brightness = Path.Combine(directory, "brightness");
            if (!File.Exists(brightness))
            {
                throw new IOException($"{brightness} does not exist");
            }

            var trigger = Path.Combine(directory, "trigger");
            if (File.Exists(trigger))
            {
                File.WriteAllText(trigger, "none");
            }

            var max = Path.Combine(directory, "max_brightness");
            var onValue = File.Exists(max) ? File.ReadAllText(max).Trim() : "1";
            return new SysfsLed(directory, onValue.Length == 0 ? "1" : onValue);
        }

        protected override void Write(bool on) => File.WriteAllText(Path.Combine(directory, "brightness"), on ? onValue : "0");
    }

    /// <summary>/sys/class/gpio/gpioN, exported on open and unexported on dispose.</summary>
    private sealed class SysfsGpioLed(int line, string directory) : Led
    {
        private const string Root = "/sys/class/gpio";

        public override string Description => $"{directory} (GPIO {line})";

        public static SysfsGpioLed Open(int line)
        {
            var directory = Path.Combine(Root, "gpio" + line.ToString(CultureInfo.InvariantCulture));
            if (!Directory.Exists(directory))
            {
                File.WriteAllText(Path.Combine(Root, "export"), line.ToString(CultureInfo.InvariantCulture));
            }

            File.WriteAllText(Path.Combine(directory, "direction"), "out");
            return new SysfsGpioLed(line, directory);
        }

        protected override void Write(bool on) => File.WriteAllText(Path.Combine(directory, "value"), on ? "1" : "0");

        public override void Dispose()
        {
            try
            {
                Write(false);
                File.WriteAllText(Path.Combine(Root, "unexport"), line.ToString(CultureInfo.InvariantCulture));
            }
            catch (IOException)
            {
                // Best effort: the line stays exported, which the next start tolerates.
            }
        }
    }
}

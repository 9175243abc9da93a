using System.Globalization;
using System.Text;
using Relay.Rendezvous.Introductions;
using Relay.Server.Primitives;

namespace Relay.Server.Rendezvous;

/// <summary>Rendezvous metrics in the Prometheus text format, for <c>/metrics</c>.</summary>
internal static class RendezvousPrometheus
{
    public static void Write(RendezvousMetrics metrics, StringBuilder output)
    {
        PrometheusText.WriteFamily(output, "relay_rendezvous_messages_total", "Rendezvous messages received from devices, by type (invalid: unparseable or unknown).", "counter", PrometheusText.Labelled(metrics.ReceivedSlots, RendezvousMetrics.MessageTypes, "type"));
        PrometheusText.WriteFamily(output, "relay_rendezvous_errors_total", "Rendezvous error messages sent to devices, by code.", "counter", PrometheusText.Labelled(metrics.ErrorSlots, RendezvousMetrics.ErrorCodes, "code"));
        PrometheusText.WriteFamily(output, "relay_rendezvous_limit_hits_total", "Rendezvous requests refused or dropped by a limit.", "counter", PrometheusText.Labelled(metrics.LimitSlots, RendezvousMetrics.LimitNames, "limit"));
        PrometheusText.WriteFamily(output, "relay_rendezvous_introductions_total", "What became of introductions: offered to the peer, answered, rejected, timed out, or a side offline.", "counter", PrometheusText.Labelled(metrics.OutcomeSlots, RendezvousMetrics.OutcomeNames, "outcome"));
        PrometheusText.WriteFamily(output, "relay_rendezvous_pending_sessions", "Offers waiting for their answer (bounded by Relay:Rendezvous:MaxPendingSessions).", "gauge", [new(string.Empty, metrics.Pending)]);
        PrometheusText.WriteFamily(output, "relay_rendezvous_turn_credentials_minted_total", "TURN credentials minted for devices over MQTT.", "counter", [new(string.Empty, metrics.CredentialsMintedCount)]);

        // Pairs never seen are left out: 36 pairs x 3 paths of zeros would drown the rest.
        var attempts = new List<KeyValuePair<string, long>>();
        var results = new List<KeyValuePair<string, long>>();
        long fallbacks = 0;
        for (var pair = 0; pair < NatKinds.PairCount; pair++)
        {
            var label = $"pair=\"{NatKinds.PairLabel(pair)}\"";
            if (metrics.Attempts(pair) is > 0 and var count)
            {
                attempts.Add(new(label, count));
            }

            for (var path = 0; path < RendezvousMetrics.Paths.Length; path++)
            {
                if (metrics.Results(pair, path) is > 0 and var n)
                {
                    results.Add(new($"{label},path=\"{RendezvousMetrics.Paths[path]}\"", n));
                    if (path == 1)
                    {
                        fallbacks += n;
                    }
                }
            }
        }

        PrometheusText.WriteFamily(output, "relay_rendezvous_attempts_total", "Introductions whose connectivity checks started (answer and start sent), by the two devices' NAT types (sorted).", "counter", attempts);
        PrometheusText.WriteFamily(output, "relay_rendezvous_results_total", "Sessions' reported outcome (first report per session), by NAT pair and path.", "counter", results);
        PrometheusText.WriteFamily(output, "relay_rendezvous_fallbacks_total", "Sessions that ended on the TURN relay (results with path relayed).", "counter", [new(string.Empty, fallbacks)]);
        PrometheusText.WriteFamily(output, "relay_rendezvous_results_ignored_total", "Results not counted: unknown session (or past its window), or the second side's report.", "counter", [new("reason=\"unknown\"", metrics.ResultsUnknown), new("reason=\"duplicate\"", metrics.ResultsDuplicate)]);

        const string histogram = "relay_rendezvous_time_to_direct_seconds";
        output.Append("# HELP ").Append(histogram).Append(" Time from start to the first successful direct check, as reported by devices.\n");
        output.Append("# TYPE ").Append(histogram).Append(" histogram\n");
        var slots = metrics.TimeToDirectSlots;
        long cumulative = 0;
        for (var i = 0; i < slots.Length; i++)
        {
            cumulative += Volatile.Read(ref slots[i]);
            var bound = i < RendezvousMetrics.TimeToDirectBucketsMs.Length ? (RendezvousMetrics.TimeToDirectBucketsMs[i] / 1000.0).ToString(CultureInfo.InvariantCulture) : "+Inf";
            output.Append(histogram).Append("_bucket{le=\"").Append(bound).Append("\"} ").Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        output.Append(histogram).Append("_sum ").Append((metrics.TimeToDirectSumMs / 1000.0).ToString(CultureInfo.InvariantCulture)).Append('\n');
        output.Append(histogram).Append("_count ").Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
    }
}

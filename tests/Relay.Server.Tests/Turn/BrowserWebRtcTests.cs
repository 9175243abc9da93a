using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Relay.Server.Turn;
using Xunit.Abstractions;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// A real browser (Debian's chromium, headless, driven by Playwright) relays WebRTC through us. Two
/// RTCPeerConnections in one page, both restricted to relay candidates (iceTransportPolicy 'relay'), open a
/// data channel and echo a message; Chrome's own stats must show the selected pair is relay/relay through
/// our TURN URL, and our counters must show the packets crossed our relay.
/// </summary>
/// <remarks>
/// The two relayed addresses are both ours, on 127.0.0.1, so each allocation's peer is the other
/// allocation's relayed address: the server needs <c>AllowLoopbackPeers</c>. test.sh installs chromium;
/// Playwright cannot download a browser here, so the test launches the system one and fails, not skips,
/// when it is missing.
/// </remarks>
public sealed class BrowserWebRtcTests(ITestOutputHelper output)
{
    private const string ChromiumPath = "/usr/bin/chromium";
    private const string User = "alice";
    private const string Password = "wonderland";

    /// <summary>
    /// Runs in the page. Non-trickle ICE (each side waits for gathering to complete, so its SDP carries its
    /// relay candidate), which keeps the exchange free of ordering races. Resolves with the echo and the
    /// selected pair's candidates from getStats; rejects, with everything the page saw, on a failure or
    /// after <c>timeoutMs</c>.
    /// </summary>
    private const string PageScript = """
        async ({ url, username, credential, message, timeoutMs }) => {
          const log = [];
          const config = { iceServers: [{ urls: url, username, credential }], iceTransportPolicy: 'relay' };
          const a = new RTCPeerConnection(config);
          const b = new RTCPeerConnection(config);
          let timer;
          const failed = new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no echo within ${timeoutMs} ms; page log:\n${log.join('\n')}`)), timeoutMs);
            for (const [pc, name] of [[a, 'a'], [b, 'b']]) {
              pc.onicecandidate = e => log.push(`${name} candidate ${e.candidate ? e.candidate.candidate : '(end)'}`);
              pc.onicecandidateerror = e => log.push(`${name} icecandidateerror ${e.url} ${e.errorCode} ${e.errorText}`);
              pc.onicegatheringstatechange = () => log.push(`${name} gathering ${pc.iceGatheringState}`);
              pc.oniceconnectionstatechange = () => {
                log.push(`${name} ice ${pc.iceConnectionState}`);
                if (pc.iceConnectionState === 'failed') {
                  reject(new Error(`ICE failed on ${name}; page log:\n${log.join('\n')}`));
                }
              };
            }
          });
          // Gathering ends with or without a relay candidate; without one there is nothing to wait for.
          const gathered = pc => new Promise((resolve, reject) => {
            const check = () => {
              if (pc.iceGatheringState !== 'complete') return false;
              if (pc.localDescription.sdp.includes(' typ relay')) resolve();
              else reject(new Error(`gathering ended without a relay candidate; page log:\n${log.join('\n')}`));
              return true;
            };
            if (!check()) pc.addEventListener('icegatheringstatechange', check);
          });

          b.ondatachannel = e => { const channel = e.channel; channel.onmessage = m => channel.send(`echo: ${m.data}`); };
          const channel = a.createDataChannel('relay-test');
          const echoed = new Promise(resolve => { channel.onmessage = m => resolve(m.data); });
          channel.onopen = () => channel.send(message);

          const run = (async () => {
            await a.setLocalDescription();
            await gathered(a);
            await b.setRemoteDescription(a.localDescription);
            await b.setLocalDescription();
            await gathered(b);
            await a.setRemoteDescription(b.localDescription);
            return await echoed;
          })();
          const echo = await Promise.race([run, failed]);
          clearTimeout(timer);

          // The pair ICE selected, as the transport reports it, and both of its candidates.
          const selected = async pc => {
            const stats = [...(await pc.getStats()).values()];
            const transport = stats.find(s => s.type === 'transport' && s.selectedCandidatePairId);
            const pair = transport
              ? stats.find(s => s.id === transport.selectedCandidatePairId)
              : stats.find(s => s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated);
            if (!pair) return { state: 'none', stats: JSON.stringify(stats) };
            const local = stats.find(s => s.id === pair.localCandidateId);
            const remote = stats.find(s => s.id === pair.remoteCandidateId);
            return {
              state: pair.state,
              localType: local.candidateType, localAddress: `${local.address}:${local.port}`,
              localRelayProtocol: local.relayProtocol ?? '', localUrl: local.url ?? '',
              remoteType: remote.candidateType, remoteAddress: `${remote.address}:${remote.port}`,
            };
          };
          const result = { echo, a: await selected(a), b: await selected(b), log };
          a.close();
          b.close();
          return result;
        }
        """;

    [Theory]
    [InlineData("udp")]
    [InlineData("tcp")]
    public async Task Chromium_DataChannel_BetweenTwoPeerConnections_GoesThroughOurTurnRelay(string transport)
    {
        Assert.True(File.Exists(ChromiumPath), $"{ChromiumPath} is not installed; ./test.sh installs it (apt-get install chromium)");
        await using var server = await RelayTestServer.StartAsync($"Relay:Turn:Users:0={User}:{Password}", "Relay:Turn:AllowLoopbackPeers=true");
        var turnUrl = $"turn:127.0.0.1:{server.StunPort}?transport={transport}";

        var profile = Directory.CreateTempSubdirectory("relay-chromium-").FullName;
        try
        {
            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchPersistentContextAsync(profile, new BrowserTypeLaunchPersistentContextOptions
            {
                ExecutablePath = ChromiumPath,
                Headless = true,
                Timeout = 60_000,
                Args =
                [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                ],
            });
            var page = browser.Pages.Count > 0 ? browser.Pages[0] : await browser.NewPageAsync();
            var console = new List<string>();
            page.Console += (_, message) => { lock (console) { console.Add($"{message.Type}: {message.Text}"); } };

            var message = $"hello over {transport}";
            JsonElement result;
            try
            {
                result = await page.EvaluateAsync<JsonElement>(PageScript, new
                {
                    url = turnUrl,
                    username = User,
                    credential = Password,
                    message,
                    timeoutMs = 30_000,
                });
            }
            catch (PlaywrightException e)
            {
                string[] lines;
                lock (console)
                {
                    lines = [.. console];
                }

                Assert.Fail($"{turnUrl}: {e.Message}\nbrowser console:\n{string.Join('\n', lines)}");
                throw;
            }

            var diagnostics = $"{turnUrl}: {result}";
            output.WriteLine(diagnostics);
            Assert.True(result.GetProperty("echo").GetString() == $"echo: {message}", diagnostics);
            foreach (var side in new[] { "a", "b" })
            {
                var pair = result.GetProperty(side);
                Assert.True(pair.GetProperty("state").GetString() == "succeeded", $"{side}: selected pair not succeeded; {diagnostics}");
                Assert.True(pair.GetProperty("localType").GetString() == "relay", $"{side}: local candidate not relay; {diagnostics}");
                Assert.True(pair.GetProperty("remoteType").GetString() == "relay", $"{side}: remote candidate not relay; {diagnostics}");

                // The browser reached our TURN server over the transport the URL asked for.
                Assert.True(pair.GetProperty("localRelayProtocol").GetString() == transport, $"{side}: relayProtocol; {diagnostics}");
                Assert.True(pair.GetProperty("localUrl").GetString() is { } url && url.StartsWith($"turn:127.0.0.1:{server.StunPort}", StringComparison.Ordinal), $"{side}: url; {diagnostics}");
            }
        }
        finally
        {
            Directory.Delete(profile, recursive: true);
        }

        // Our side: both browser peer connections allocated here, and the data went through our relay in
        // both directions (each relayed address is the other's peer, so every packet is counted out and in).
        var metrics = server.Services.GetRequiredService<TurnMetrics>();
        Assert.True(metrics.AllocationsCreated >= 2, $"allocations created: {metrics.AllocationsCreated}");
        Assert.True(metrics.RelayedPackets(toPeer: true) > 0, $"packets relayed to peers: {metrics.RelayedPackets(toPeer: true)}");
        Assert.True(metrics.RelayedPackets(toPeer: false) > 0, $"packets relayed from peers: {metrics.RelayedPackets(toPeer: false)}");
    }
}

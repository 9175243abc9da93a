using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.Protocol.Stun;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// coturn's own client (turnutils_uclient -W, its TURN REST mode) against a bare Allocate
/// responder built from our nonce service and credential store: proves that coturn derives the same
/// REST password and long-term key as we do, and takes our RFC 8489 nonce cookie.
/// </summary>
public sealed class TurnCoturnInteropTests
{
    [Fact]
    public async Task CoturnUclient_RestCredential_VerifiesAgainstOurCandidateKeys()
    {
        const string secret = "interop-secret";
        var options = new TurnOptions { Realm = "example.org", SharedSecrets = { "some-newer-secret", secret } };
        var store = new TurnCredentialStore(options, TimeProvider.System);
        var nonces = new TurnNonceService(TimeProvider.System, TimeSpan.FromMinutes(10));

        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)socket.LocalEndPoint!).Port;

        using var uclient = ExternalTool.Start("turnutils_uclient", "-W", secret, "-u", "alice", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-n", "1", "-e", "127.0.0.1", "127.0.0.1");

        string? verified = null;
        var log = new StringBuilder();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            var buffer = new byte[2048];
            var response = new byte[512];
            while (verified is null)
            {
                var received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
                var from = (IPEndPoint)received.RemoteEndPoint;
                var client = StunAddress.FromEndPoint(from);
                var length = Answer(buffer.AsSpan(0, received.ReceivedBytes), client, store, nonces, response, log, out verified);
                if (length > 0)
                {
                    await socket.SendToAsync(response.AsMemory(0, length), SocketFlags.None, from, timeout.Token);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }

        var output = await uclient.StopAsync();
        Assert.True(verified is not null, $"no authenticated Allocate verified.\nours:\n{log}\nuclient:\n{output}");

        // uclient builds "<now + a day>:alice" (draft-uberti-behave-turn-rest-00 §2.2).
        var colon = verified.IndexOf(':', StringComparison.Ordinal);
        Assert.Equal("alice", verified[(colon + 1)..]);
        var expiry = long.Parse(verified[..colon], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(expiry, DateTimeOffset.UtcNow.ToUnixTimeSeconds(), DateTimeOffset.UtcNow.AddDays(2).ToUnixTimeSeconds());
    }

    private static int Answer(
        ReadOnlySpan<byte> datagram, in StunAddress client, TurnCredentialStore store, TurnNonceService nonces, Span<byte> response, StringBuilder log, out string? verified)
    {
        verified = null;
        if (StunMessageReader.TryParse(datagram, StunReaderLimits.Default, out var message, out var error) != OperationStatus.Done)
        {
            log.AppendLine($"unparsable datagram: {error}");
            return 0;
        }

        if (message.Header.Method != (ushort)StunMethod.Allocate || message.Header.Class != StunClass.Request)
        {
            log.AppendLine($"ignored method 0x{message.Header.Method:x3} class {message.Header.Class}");
            return 0;
        }

        if (message.TryGetAttribute(StunAttributeType.Username, out var username)
            && message.TryGetAttribute(StunAttributeType.Nonce, out var nonce))
        {
            var algorithm = message.TryGetAttribute(StunAttributeType.PasswordAlgorithm, out var chosen)
                ? (StunPasswordAlgorithm)BinaryPrimitives.ReadUInt16BigEndian(chosen)
                : StunPasswordAlgorithm.Md5;
            var name = Encoding.UTF8.GetString(username);
            var nonceCheck = nonces.Validate(nonce, client);
            Span<byte> keys = stackalloc byte[TurnCredentialStore.MaxCandidates * 32];
            var count = store.GetCandidateKeys(username, algorithm, keys);
            var keyLength = StunCredentials.KeyLength(algorithm);
            var sha1 = false;
            var sha256 = false;
            for (var i = 0; i < count; i++)
            {
                var key = keys.Slice(i * keyLength, keyLength);
                sha1 |= message.VerifyMessageIntegrity(key);
                sha256 |= message.VerifyMessageIntegritySha256(key);
            }

            log.AppendLine($"USERNAME={name} PASSWORD-ALGORITHM present {message.HasAttribute(StunAttributeType.PasswordAlgorithm)}, PASSWORD-ALGORITHMS echoed {message.HasAttribute(StunAttributeType.PasswordAlgorithms)}");
            log.AppendLine($"USERNAME={name} algorithm={algorithm} nonce={nonceCheck} candidates={count} MI={sha1} MI-SHA256={sha256} "
                + $"(MI present {message.HasMessageIntegrity}, MI-SHA256 present {message.HasMessageIntegritySha256})");
            if (nonceCheck == NonceCheck.Valid && count == 2 && (sha1 || sha256))
            {
                verified = name;
            }

            return 0;
        }

        // RFC 8489 §9.2.4: 401 with REALM, a NONCE carrying the cookie, and PASSWORD-ALGORITHMS.
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.Allocate, StunClass.ErrorResponse), message.Header.TransactionId);
        writer.WriteErrorCode(401, "Unauthorized"u8);
        writer.WriteAttribute(StunAttributeType.Realm, Encoding.UTF8.GetBytes(store.Realm));
        var fresh = new byte[TurnNonceService.MaxLength];
        writer.WriteAttribute(StunAttributeType.Nonce, fresh.AsSpan(0, nonces.Write(client, fresh)));
        writer.WritePasswordAlgorithms([StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5]);
        writer.WriteFingerprint();
        log.AppendLine("sent 401");
        return writer.Length;
    }

}

using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Relay.LoadGen;

/// <summary>
/// TURN (RFC 8656) client messages from raw bytes, just enough to drive any server through
/// Allocate, CreatePermission, ChannelBind and Refresh with the long-term credential mechanism
/// (RFC 8489 §9.2: key = MD5("user:realm:pass"), MESSAGE-INTEGRITY = HMAC-SHA1), and ChannelData
/// (RFC 8656 §12.4). Deliberately independent of the server's code (<see cref="StunWire"/> says why).
/// </summary>
internal static class TurnWire
{
    // RFC 8656 §18 methods, as request types (class bits 0); success = | 0x0100, error = | 0x0110.
    public const ushort AllocateRequest = 0x0003;
    public const ushort RefreshRequest = 0x0004;
    public const ushort CreatePermissionRequest = 0x0008;
    public const ushort ChannelBindRequest = 0x0009;

    // RFC 8489 §18.3 / RFC 8656 §18 attribute types.
    public const ushort Username = 0x0006;
    public const ushort MessageIntegrity = 0x0008;
    public const ushort ErrorCode = 0x0009;
    public const ushort ChannelNumber = 0x000C;
    public const ushort Lifetime = 0x000D;
    public const ushort XorPeerAddress = 0x0012;
    public const ushort Realm = 0x0014;
    public const ushort Nonce = 0x0015;
    public const ushort XorRelayedAddress = 0x0016;
    public const ushort RequestedTransport = 0x0019;

    public const int ChannelHeaderLength = 4;
    private const int IntegrityLength = 20;

    /// <summary>Request class bits cleared, so <c>Method(0x0113) == 0x0003</c>.</summary>
    public static ushort Method(ushort type) => (ushort)(type & 0xFEEF);

    public static bool IsSuccess(ushort type) => (type & 0x0110) == 0x0100;

    public static bool IsError(ushort type) => (type & 0x0110) == 0x0110;

    /// <summary>RFC 8489 §9.2.2: the long-term key for MD5 (no PASSWORD-ALGORITHM sent, so MD5 applies).</summary>
    public static byte[] LongTermKey(string user, string realm, string password) =>
        MD5.HashData(Encoding.UTF8.GetBytes($"{user}:{realm}:{password}"));

    /// <summary>Incremental writer for one request into a caller-owned buffer.</summary>
    public ref struct Builder
    {
        private readonly Span<byte> _buffer;
        private int _length;

        public Builder(Span<byte> buffer, ushort type, ReadOnlySpan<byte> transactionId)
        {
            _buffer = buffer;
            BinaryPrimitives.WriteUInt16BigEndian(buffer, type);
            BinaryPrimitives.WriteUInt16BigEndian(buffer[2..], 0);
            BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], StunWire.MagicCookie);
            transactionId.CopyTo(buffer[StunWire.TransactionIdOffset..]);
            _length = StunWire.HeaderLength;
        }

        public readonly int Length => _length;

        public void Add(ushort type, ReadOnlySpan<byte> value)
        {
            var at = Begin(type, value.Length);
            value.CopyTo(_buffer[at..]);
        }

        public void AddUInt32(ushort type, uint value)
        {
            var at = Begin(type, 4);
            BinaryPrimitives.WriteUInt32BigEndian(_buffer[at..], value);
        }

        /// <summary>RFC 8656 §14.12: REQUESTED-TRANSPORT, protocol then three RFFU bytes.</summary>
        public void AddRequestedTransportUdp() => AddUInt32(RequestedTransport, 17u << 24);

        /// <summary>RFC 8656 §14.1: CHANNEL-NUMBER, the number then two RFFU bytes.</summary>
        public void AddChannelNumber(ushort channel) => AddUInt32(ChannelNumber, (uint)channel << 16);

        /// <summary>RFC 8489 §14.2 XOR-MAPPED-ADDRESS encoding (used by XOR-PEER-ADDRESS).</summary>
        public void AddXorAddress(ushort type, IPEndPoint endpoint)
        {
            var v6 = endpoint.AddressFamily == AddressFamily.InterNetworkV6;
            var at = Begin(type, v6 ? 20 : 8);
            var value = _buffer.Slice(at, v6 ? 20 : 8);
            value[0] = 0;
            value[1] = (byte)(v6 ? 2 : 1);
            BinaryPrimitives.WriteUInt16BigEndian(value[2..], (ushort)(endpoint.Port ^ (StunWire.MagicCookie >> 16)));
            _ = endpoint.Address.TryWriteBytes(value[4..], out _);
            // The address is XORed with the magic cookie, and for IPv6 the transaction id after it.
            Span<byte> mask = stackalloc byte[16];
            BinaryPrimitives.WriteUInt32BigEndian(mask, StunWire.MagicCookie);
            _buffer.Slice(StunWire.TransactionIdOffset, StunWire.TransactionIdLength).CopyTo(mask[4..]);
            for (var i = 0; i < (v6 ? 16 : 4); i++)
            {
                value[4 + i] ^= mask[i];
            }
        }

        /// <summary>
        /// RFC 8489 §14.5: MESSAGE-INTEGRITY last, HMAC-SHA1 over the message with the header length
        /// already counting the attribute. Returns the finished message length.
        /// </summary>
        public int FinishWithIntegrity(ReadOnlySpan<byte> key)
        {
            var at = Begin(MessageIntegrity, IntegrityLength);
            HMACSHA1.HashData(key, _buffer[..(_length - IntegrityLength - 4)], _buffer.Slice(at, IntegrityLength));
            return _length;
        }

        public readonly int Finish() => _length;

        private int Begin(ushort type, int valueLength)
        {
            var padded = (valueLength + 3) & ~3;
            BinaryPrimitives.WriteUInt16BigEndian(_buffer[_length..], type);
            BinaryPrimitives.WriteUInt16BigEndian(_buffer[(_length + 2)..], (ushort)valueLength);
            var at = _length + 4;
            _buffer.Slice(at + valueLength, padded - valueLength).Clear();
            _length = at + padded;
            BinaryPrimitives.WriteUInt16BigEndian(_buffer[2..], (ushort)(_length - StunWire.HeaderLength));
            return at;
        }
    }

    /// <summary>A complete STUN message (header checks only): type and transaction id.</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> message, out ushort type)
    {
        type = 0;
        if (message.Length < StunWire.HeaderLength || (message[0] & 0xC0) != 0
            || BinaryPrimitives.ReadUInt32BigEndian(message[4..]) != StunWire.MagicCookie
            || BinaryPrimitives.ReadUInt16BigEndian(message[2..]) + StunWire.HeaderLength != message.Length)
        {
            return false;
        }

        type = BinaryPrimitives.ReadUInt16BigEndian(message);
        return true;
    }

    /// <summary>The first attribute of <paramref name="type"/>; <paramref name="offset"/> is where its header starts.</summary>
    public static bool TryFind(ReadOnlySpan<byte> message, ushort type, out ReadOnlySpan<byte> value, out int offset)
    {
        offset = StunWire.HeaderLength;
        while (offset + 4 <= message.Length)
        {
            var attributeType = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
            var length = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
            if (offset + 4 + length > message.Length)
            {
                break;
            }

            if (attributeType == type)
            {
                value = message.Slice(offset + 4, length);
                return true;
            }

            offset += 4 + ((length + 3) & ~3);
        }

        value = default;
        return false;
    }

    /// <summary>RFC 8489 §14.8: class * 100 + number, or 0 when absent.</summary>
    public static int ReadErrorCode(ReadOnlySpan<byte> message) =>
        TryFind(message, ErrorCode, out var value, out _) && value.Length >= 4 ? ((value[2] & 0x7) * 100) + value[3] : 0;

    /// <summary>
    /// RFC 8489 §14.5: recompute the HMAC with the header length ending at MESSAGE-INTEGRITY (a
    /// FINGERPRINT after it is excluded) and compare in constant time.
    /// </summary>
    public static bool VerifyIntegrity(ReadOnlySpan<byte> message, ReadOnlySpan<byte> key)
    {
        if (!TryFind(message, MessageIntegrity, out var mac, out var offset) || mac.Length != IntegrityLength || offset > 2048)
        {
            return false;
        }

        Span<byte> copy = stackalloc byte[offset];
        message[..offset].CopyTo(copy);
        BinaryPrimitives.WriteUInt16BigEndian(copy[2..], (ushort)(offset + 4 + IntegrityLength - StunWire.HeaderLength));
        Span<byte> expected = stackalloc byte[IntegrityLength];
        HMACSHA1.HashData(key, copy, expected);
        return CryptographicOperations.FixedTimeEquals(expected, mac);
    }

    /// <summary>Decodes an XOR-encoded address attribute value (IPv4 or IPv6).</summary>
    public static IPEndPoint? ReadXorAddress(ReadOnlySpan<byte> value, ReadOnlySpan<byte> transactionId)
    {
        if (value.Length < 8)
        {
            return null;
        }

        var port = BinaryPrimitives.ReadUInt16BigEndian(value[2..]) ^ (int)(StunWire.MagicCookie >> 16);
        Span<byte> mask = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(mask, StunWire.MagicCookie);
        transactionId.CopyTo(mask[4..]);
        var length = value[1] == 2 ? 16 : 4;
        if (value.Length < 4 + length)
        {
            return null;
        }

        Span<byte> address = stackalloc byte[length];
        for (var i = 0; i < length; i++)
        {
            address[i] = (byte)(value[4 + i] ^ mask[i]);
        }

        return new IPEndPoint(new IPAddress(address), port);
    }
}

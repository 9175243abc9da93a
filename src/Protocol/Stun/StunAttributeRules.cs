using System.Buffers.Binary;

namespace Relay.Protocol.Stun;

/// <summary>
/// Length and shape rules for the attributes this codec knows, applied once while a message is
/// validated so that every later typed read can trust its input. Unknown types pass with any length.
/// </summary>
internal static class StunAttributeRules
{
    public static bool IsValid(ushort type, ReadOnlySpan<byte> value)
    {
        switch ((StunAttributeType)type)
        {
            // RFC 8489 §14.1/§14.2, RFC 5780 §7.3/§7.4, RFC 8656 §18.3/§18.5: family 1 with 4 address
            // bytes (value length 8) or family 2 with 16 (value length 20).
            case StunAttributeType.MappedAddress:
            case StunAttributeType.XorMappedAddress:
            case StunAttributeType.AlternateServer:
            case StunAttributeType.ResponseOrigin:
            case StunAttributeType.OtherAddress:
            case StunAttributeType.XorPeerAddress:
            case StunAttributeType.XorRelayedAddress:
            case StunAttributeType.ResponseAddress:
            case StunAttributeType.SourceAddress:
            case StunAttributeType.ChangedAddress:
            case StunAttributeType.ReflectedFrom:
                return IsAddress(value);

            // RFC 8489 §14.3.
            case StunAttributeType.Username:
                return value.Length <= StunConstants.MaxUsernameBytes;

            // RFC 8489 §14.9, §14.10, §14.14: fewer than 128 characters, at most 763 bytes.
            case StunAttributeType.Realm:
            case StunAttributeType.Nonce:
            case StunAttributeType.Software:
                return value.Length <= StunConstants.MaxQuotedStringBytes;

            // RFC 8489 §14.16.
            case StunAttributeType.AlternateDomain:
                return value.Length <= StunConstants.MaxAlternateDomainBytes;

            // RFC 8489 §14.4.
            case StunAttributeType.Userhash:
                return value.Length == StunConstants.UserhashLength;

            // RFC 8489 §14.5.
            case StunAttributeType.MessageIntegrity:
                return value.Length == StunConstants.MessageIntegrityLength;

            // RFC 8489 §14.6: at least 16 bytes, at most 32, a multiple of 4.
            case StunAttributeType.MessageIntegritySha256:
                return value.Length is >= 16 and <= 32 && (value.Length & 3) == 0;

            // RFC 8489 §14.7.
            case StunAttributeType.Fingerprint:
                return value.Length == StunConstants.FingerprintLength;

            // RFC 8489 §14.8: class 3..6, number 0..99, reason phrase under 128 characters.
            case StunAttributeType.ErrorCode:
                return IsErrorCode(value);

            // RFC 8489 §14.13: a list of 16-bit types.
            case StunAttributeType.UnknownAttributes:
                return (value.Length & 1) == 0;

            // RFC 8489 §14.11/§14.12.
            case StunAttributeType.PasswordAlgorithms:
                return IsPasswordAlgorithmList(value, single: false);
            case StunAttributeType.PasswordAlgorithm:
                return IsPasswordAlgorithmList(value, single: true);

            // RFC 5780 §7.2, §7.5: 32 bits. PADDING (§7.6) may be any length.
            case StunAttributeType.ChangeRequest:
            case StunAttributeType.ResponsePort:
            // RFC 8656 §18: fixed-size 32-bit fields.
            case StunAttributeType.ChannelNumber:
            case StunAttributeType.Lifetime:
            case StunAttributeType.RequestedTransport:
            case StunAttributeType.RequestedAddressFamily:
            case StunAttributeType.AdditionalAddressFamily:
            case StunAttributeType.ConnectionId:
            case StunAttributeType.Priority:
                return value.Length == 4;

            case StunAttributeType.EvenPort:
                return value.Length == 1;
            case StunAttributeType.DontFragment:
            case StunAttributeType.UseCandidate:
                return value.IsEmpty;
            case StunAttributeType.ReservationToken:
            case StunAttributeType.IceControlled:
            case StunAttributeType.IceControlling:
                return value.Length == 8;

            default:
                return true;
        }
    }

    private static bool IsAddress(ReadOnlySpan<byte> value) =>
        value.Length switch
        {
            8 => value[1] == StunAddress.FamilyIPv4,
            20 => value[1] == StunAddress.FamilyIPv6,
            _ => false,
        };

    private static bool IsErrorCode(ReadOnlySpan<byte> value)
    {
        if (value.Length < 4 || value.Length - 4 > StunConstants.MaxQuotedStringBytes)
        {
            return false;
        }

        var errorClass = value[2] & 0x07;
        return errorClass is >= 3 and <= 6 && value[3] <= 99;
    }

    // Each entry: algorithm (16), parameters length (16), parameters padded to 4 (RFC 8489 §14.11).
    private static bool IsPasswordAlgorithmList(ReadOnlySpan<byte> value, bool single)
    {
        var offset = 0;
        var entries = 0;
        while (offset < value.Length)
        {
            if (value.Length - offset < 4)
            {
                return false;
            }

            var parametersLength = BinaryPrimitives.ReadUInt16BigEndian(value[(offset + 2)..]);
            var padded = (parametersLength + 3) & ~3;
            var available = value.Length - offset - 4;

            // The last entry's padding may coincide with the attribute's own padding.
            if (parametersLength > available || (padded > available && offset + 4 + parametersLength != value.Length))
            {
                return false;
            }

            offset += 4 + Math.Min(padded, available);
            entries++;
        }

        return single ? entries == 1 : entries >= 1;
    }
}

using System.Text;
using System.Text.Json.Nodes;
using Relay.Server.Twins;

namespace Relay.Unit.Tests.Twins;

/// <summary>The pure JSON of device state: the bounded parser, RFC 7386 merge patch, the delta and the limit checks.</summary>
public sealed class TwinJsonTests
{
    private static readonly TwinLimits Wide = new(1 << 20, 32, 100_000);

    // RFC 7386 Appendix A: every example, in order (target, patch, result).
    public static TheoryData<string, string, string> Rfc7386Examples => new()
    {
        { """{"a":"b"}""", """{"a":"c"}""", """{"a":"c"}""" },
        { """{"a":"b"}""", """{"b":"c"}""", """{"a":"b","b":"c"}""" },
        { """{"a":"b"}""", """{"a":null}""", """{}""" },
        { """{"a":"b","b":"c"}""", """{"a":null}""", """{"b":"c"}""" },
        { """{"a":["b"]}""", """{"a":"c"}""", """{"a":"c"}""" },
        { """{"a":"c"}""", """{"a":["b"]}""", """{"a":["b"]}""" },
        { """{"a":{"b":"c"}}""", """{"a":{"b":"d","c":null}}""", """{"a":{"b":"d"}}""" },
        { """{"a":[{"b":"c"}]}""", """{"a":[1]}""", """{"a":[1]}""" },
        { """{"e":null}""", """{"a":1}""", """{"e":null,"a":1}""" },
        { """{}""", """{"a":{"bb":{"ccc":null}}}""", """{"a":{"bb":{}}}""" },
    };

    [Theory]
    [MemberData(nameof(Rfc7386Examples))]
    public void MergePatch_FollowsRfc7386AppendixA(string target, string patch, string expected)
    {
        var t = Parse(target);
        TwinJson.MergePatch(t, Parse(patch));
        Assert.Equal(expected, Encoding.UTF8.GetString(TwinJson.ToUtf8(t)));
    }

    [Theory]
    [InlineData("""{"led":"on","interval":5}""", """{"led":"off","interval":5}""", """{"led":"on"}""")]
    [InlineData("""{"led":"on"}""", """{"led":"on","extra":1}""", """{}""")]
    [InlineData("""{"a":{"x":1,"y":2}}""", """{"a":{"x":1}}""", """{"a":{"y":2}}""")]
    [InlineData("""{"a":{"x":1}}""", """{"a":{"x":1}}""", """{}""")]
    [InlineData("""{"a":{"b":{"c":1}}}""", """{"a":{"b":{"c":1}}}""", """{}""")]
    [InlineData("""{"a":{"x":1}}""", """{"a":5}""", """{"a":{"x":1}}""")]
    [InlineData("""{"a":[1,2]}""", """{"a":[1,2]}""", """{}""")]
    [InlineData("""{"a":[1,2]}""", """{"a":[2,1]}""", """{"a":[1,2]}""")]
    [InlineData("""{"n":1.5}""", """{}""", """{"n":1.5}""")]
    public void Delta_IsWhatDesiredHasThatReportedDoesNot(string desired, string reported, string expected)
    {
        var d = Parse(desired);
        var before = Encoding.UTF8.GetString(TwinJson.ToUtf8(d));
        Assert.Equal(expected, Encoding.UTF8.GetString(TwinJson.ToUtf8(TwinJson.Delta(d, Parse(reported)))));
        Assert.Equal(before, Encoding.UTF8.GetString(TwinJson.ToUtf8(d)));
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("[]")]
    [InlineData("1")]
    [InlineData("\"x\"")]
    [InlineData("null")]
    [InlineData("{")]
    [InlineData("{\"a\":}")]
    [InlineData("{\"a\":1}{}")]
    [InlineData("{\"a\":1} x")]
    [InlineData("{\"a\":1,\"a\":2}")]
    [InlineData("{\"a\":{\"b\":1,\"b\":1}}")]
    [InlineData("{/*c*/\"a\":1}")]
    [InlineData("{'a':1}")]
    public void Parse_RefusesWhatIsNotOneObject(string text)
    {
        Assert.Equal(TwinParseStatus.InvalidData, TwinJson.Parse(Encoding.UTF8.GetBytes(text), Wide, out var document, out _, out var problem));
        Assert.Null(document);
        Assert.False(string.IsNullOrEmpty(problem));
    }

    [Fact]
    public void Parse_RefusesInvalidUtf8()
    {
        byte[] text = [.. "{\"a\":\""u8, 0xC3, 0x28, .. "\"}"u8];
        Assert.Equal(TwinParseStatus.InvalidData, TwinJson.Parse(text, Wide, out _, out _, out _));
    }

    [Fact]
    public void Parse_KeepsNumbersAsWritten()
    {
        var text = """{"big":12345678901234567890123,"d":0.1000,"neg":-0,"e":1E+2}""";
        Assert.Equal(TwinParseStatus.Done, TwinJson.Parse(Encoding.UTF8.GetBytes(text), Wide, out var document, out _, out _));
        Assert.Equal(text, Encoding.UTF8.GetString(TwinJson.ToUtf8(document!)));
    }

    [Theory]
    [InlineData(1, """{"a":1}""", true)]
    [InlineData(1, """{"a":{}}""", false)]
    [InlineData(1, """{"a":[]}""", false)]
    [InlineData(2, """{"a":{"b":[1]}}""", false)]
    [InlineData(3, """{"a":{"b":[1]}}""", true)]
    [InlineData(3, """{"a":{"b":[[1]]}}""", false)]
    public void Parse_CountsDepthFromTheTopObject(int maxDepth, string text, bool fits)
    {
        var status = TwinJson.Parse(Encoding.UTF8.GetBytes(text), new TwinLimits(1024, maxDepth, 100), out var document, out var limit, out _);
        Assert.Equal(fits ? TwinParseStatus.Done : TwinParseStatus.LimitHit, status);
        if (!fits)
        {
            Assert.Equal(TwinLimit.Depth, limit);
        }
        else
        {
            Assert.Null(TwinJson.Check(document!, text.Length, new TwinLimits(1024, maxDepth, 100), out _));
        }
    }

    [Fact]
    public void Parse_HugeDepth_IsALimitNotAStackOverflow()
    {
        var text = new string('[', 100_000);
        var deep = "{\"a\":" + text + new string(']', 100_000) + "}";
        Assert.Equal(TwinParseStatus.LimitHit, TwinJson.Parse(Encoding.UTF8.GetBytes(deep), new TwinLimits(1 << 20, 8, 100), out _, out var limit, out _));
        Assert.Equal(TwinLimit.Depth, limit);
    }

    [Fact]
    public void Parse_CountsKeysAtEveryLevel()
    {
        var limits = new TwinLimits(1024, 8, 3);
        Assert.Equal(TwinParseStatus.Done, TwinJson.Parse("""{"a":{"b":1,"c":2}}"""u8, limits, out _, out _, out _));
        Assert.Equal(TwinParseStatus.LimitHit, TwinJson.Parse("""{"a":{"b":1,"c":2},"d":3}"""u8, limits, out _, out var limit, out _));
        Assert.Equal(TwinLimit.Keys, limit);
    }

    [Fact]
    public void Parse_ChecksTheByteLengthFirst()
    {
        var text = Encoding.UTF8.GetBytes("{\"a\":\"" + new string('x', 100) + "\"}");
        Assert.Equal(TwinParseStatus.LimitHit, TwinJson.Parse(text, new TwinLimits(text.Length - 1, 8, 100), out _, out var limit, out _));
        Assert.Equal(TwinLimit.DocumentBytes, limit);
        Assert.Equal(TwinParseStatus.Done, TwinJson.Parse(text, new TwinLimits(text.Length, 8, 100), out _, out _, out _));
    }

    [Fact]
    public void Check_SeesWhatAMergeMade()
    {
        var limits = new TwinLimits(1024, 2, 3);
        var target = Parse("""{"a":{"b":1}}""");
        TwinJson.MergePatch(target, Parse("""{"a":{"c":{"d":1}}}"""));
        Assert.Equal(TwinLimit.Depth, TwinJson.Check(target, 10, limits, out _));

        target = Parse("""{"a":1,"b":2}""");
        TwinJson.MergePatch(target, Parse("""{"c":3,"d":4}"""));
        Assert.Equal(TwinLimit.Keys, TwinJson.Check(target, 10, limits, out _));
        Assert.Equal(TwinLimit.DocumentBytes, TwinJson.Check(Parse("{}"), 1025, limits, out _));
    }

    /// <summary>Random and mutated documents: the parser only ever answers Done, InvalidData or LimitHit, and what it takes round-trips.</summary>
    [Fact]
    public void Parse_RandomAndMutatedInput_NeverThrows()
    {
        var random = new Random(1507);
        string[] seeds =
        [
            """{"led":"on","interval":5,"nested":{"a":[1,2,{"b":null}],"t":true,"f":false},"s":"\u00e9\n"}""",
            """{"a":{"b":{"c":{"d":{"e":{}}}}}}""",
        ];
        var limits = new TwinLimits(4096, 4, 16);
        for (var i = 0; i < 20_000; i++)
        {
            var bytes = Encoding.UTF8.GetBytes(seeds[i % seeds.Length]);
            var mutations = random.Next(1, 4);
            for (var m = 0; m < mutations; m++)
            {
                switch (random.Next(3))
                {
                    case 0:
                        bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
                        break;
                    case 1:
                        bytes = bytes[..random.Next(bytes.Length)];
                        break;
                    default:
                        var at = random.Next(bytes.Length + 1);
                        bytes = [.. bytes[..at], (byte)"{}[]\",:0n\\"[random.Next(10)], .. bytes[at..]];
                        break;
                }

                if (bytes.Length == 0)
                {
                    break;
                }
            }

            var status = TwinJson.Parse(bytes, limits, out var document, out _, out _);
            if (status == TwinParseStatus.Done)
            {
                var again = TwinJson.ToUtf8(document!);
                Assert.Equal(TwinParseStatus.Done, TwinJson.Parse(again, new TwinLimits(1 << 20, 4, 16), out var reparsed, out _, out _));
                Assert.True(JsonNode.DeepEquals(document, reparsed));
            }
        }
    }

    private static JsonObject Parse(string text)
    {
        Assert.Equal(TwinParseStatus.Done, TwinJson.Parse(Encoding.UTF8.GetBytes(text), Wide, out var document, out _, out var problem));
        return document!;
    }
}

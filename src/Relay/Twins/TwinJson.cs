using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Relay.Server.Twins;

/// <summary>The bounds one document is checked against (<see cref="TwinOptions"/>).</summary>
internal readonly record struct TwinLimits(int MaxDocumentBytes, int MaxDepth, int MaxKeys)
{
    /// <summary>For documents the server stored itself: only the hard ceilings (a lowered limit must not make a stored document unreadable).</summary>
    public static TwinLimits Stored => new(int.MaxValue, TwinOptions.DepthCeiling, int.MaxValue);
}

/// <summary>Which bound a document hit.</summary>
internal enum TwinLimit
{
    DocumentBytes,
    Depth,
    Keys,
    Pending,
}

/// <summary>What <see cref="TwinJson.Parse"/> made of its input.</summary>
internal enum TwinParseStatus
{
    Done,
    InvalidData,
    LimitHit,
}

/// <summary>
/// The JSON of device state documents, pure and static: a bounded parser into <see cref="JsonObject"/>, JSON
/// Merge Patch (RFC 7386), the delta between desired and reported, and the checks of <see cref="TwinLimits"/>.
/// Input depth never becomes call depth here: every walk keeps its own stack. (System.Text.Json's own
/// <see cref="JsonNode.DeepEquals"/>, <see cref="JsonNode.DeepClone"/> and <see cref="JsonNode.WriteTo"/> do
/// recurse, so they only ever see documents already held to <see cref="TwinOptions.DepthCeiling"/>.)
/// </summary>
internal static class TwinJson
{
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, SkipValidation = true };

    /// <summary>
    /// Parses one JSON object (RFC 8259) within <paramref name="limits"/>: the byte length is checked before
    /// anything is read, depth and key count as each token arrives. A duplicate name in one object is invalid
    /// (RFC 8259 §4 leaves it undefined; a patch must mean one thing). JSON nulls become null members, which a
    /// merge patch reads as "remove".
    /// </summary>
    public static TwinParseStatus Parse(ReadOnlySpan<byte> utf8, TwinLimits limits, out JsonObject? document, out TwinLimit limit, out string? problem)
    {
        document = null;
        limit = default;
        problem = null;
        if (utf8.Length > limits.MaxDocumentBytes)
        {
            limit = TwinLimit.DocumentBytes;
            problem = $"the document is {utf8.Length} bytes, over the limit of {limits.MaxDocumentBytes}";
            return TwinParseStatus.LimitHit;
        }

        // One level of room over the limit, so that our own check (which names the limit) sees the token first.
        var reader = new Utf8JsonReader(utf8, new JsonReaderOptions { MaxDepth = Math.Min(limits.MaxDepth, TwinOptions.DepthCeiling) + 1 });
        var open = new Stack<JsonNode>();
        JsonObject? root = null;
        string? name = null;
        var keys = 0;
        try
        {
            while (reader.Read())
            {
                JsonNode? value;
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject:
                    case JsonTokenType.StartArray:
                        if (reader.CurrentDepth + 1 > limits.MaxDepth)
                        {
                            limit = TwinLimit.Depth;
                            problem = $"the document nests deeper than {limits.MaxDepth} levels";
                            return TwinParseStatus.LimitHit;
                        }

                        JsonNode container = reader.TokenType == JsonTokenType.StartObject ? new JsonObject() : new JsonArray();
                        if (open.Count == 0)
                        {
                            root = container as JsonObject;
                            if (root is null)
                            {
                                problem = "the document must be a JSON object";
                                return TwinParseStatus.InvalidData;
                            }
                        }
                        else
                        {
                            Add(open.Peek(), name, container);
                        }

                        open.Push(container);
                        continue;
                    case JsonTokenType.EndObject:
                    case JsonTokenType.EndArray:
                        open.Pop();
                        continue;
                    case JsonTokenType.PropertyName:
                        name = reader.GetString()!;
                        if (++keys > limits.MaxKeys)
                        {
                            limit = TwinLimit.Keys;
                            problem = $"the document has more than {limits.MaxKeys} keys";
                            return TwinParseStatus.LimitHit;
                        }

                        if (((JsonObject)open.Peek()).ContainsKey(name))
                        {
                            problem = $"the name '{name}' appears twice in one object";
                            return TwinParseStatus.InvalidData;
                        }

                        continue;
                    case JsonTokenType.String:
                        value = JsonValue.Create(reader.GetString()!);
                        break;
                    case JsonTokenType.Number:
                        // Kept as its text: a 64-bit id or a long decimal survives the round trip unrounded.
                        value = JsonValue.Create(JsonElement.ParseValue(ref reader));
                        break;
                    case JsonTokenType.True:
                        value = JsonValue.Create(true);
                        break;
                    case JsonTokenType.False:
                        value = JsonValue.Create(false);
                        break;
                    case JsonTokenType.Null:
                        value = null;
                        break;
                    default:
                        problem = $"unexpected {reader.TokenType}";
                        return TwinParseStatus.InvalidData;
                }

                if (open.Count == 0)
                {
                    problem = "the document must be a JSON object";
                    return TwinParseStatus.InvalidData;
                }

                Add(open.Peek(), name, value);
            }
        }
        catch (JsonException e)
        {
            problem = $"not valid JSON ({e.Message})";
            return TwinParseStatus.InvalidData;
        }
        catch (InvalidOperationException e)
        {
            // A string that is not valid UTF-8.
            problem = $"not valid JSON text ({e.Message})";
            return TwinParseStatus.InvalidData;
        }

        if (root is null)
        {
            problem = "the document is empty; send a JSON object";
            return TwinParseStatus.InvalidData;
        }

        document = root;
        return TwinParseStatus.Done;
    }

    /// <summary>
    /// RFC 7386 §2: applies <paramref name="patch"/> to <paramref name="target"/> in place. A null member
    /// removes the name, an object merges into the object of that name (replacing anything else there), any
    /// other value replaces. <paramref name="patch"/> is consumed: its members move into the target.
    /// </summary>
    public static void MergePatch(JsonObject target, JsonObject patch)
    {
        var work = new Stack<(JsonObject Target, JsonObject Patch)>();
        work.Push((target, patch));
        while (work.TryPop(out var item))
        {
            var members = item.Patch.ToArray();
            item.Patch.Clear();
            foreach (var (name, value) in members)
            {
                if (value is null)
                {
                    item.Target.Remove(name);
                }
                else if (value is JsonObject patchObject)
                {
                    if (item.Target[name] is not JsonObject targetObject)
                    {
                        // "If Target is not an Object: Target = {}", then the patch's nulls are removals from nothing.
                        targetObject = new JsonObject();
                        item.Target[name] = targetObject;
                    }

                    work.Push((targetObject, patchObject));
                }
                else
                {
                    item.Target[name] = value;
                }
            }
        }
    }

    /// <summary>
    /// What the device still has to do: every member of <paramref name="desired"/> whose value is not the same
    /// in <paramref name="reported"/>. Two objects are compared member by member, so the delta of
    /// <c>{"a":{"x":1,"y":2}}</c> against <c>{"a":{"x":1}}</c> is <c>{"a":{"y":2}}</c>; arrays and other values
    /// compare whole. An object left empty is omitted. A new object that shares nothing with its inputs.
    /// </summary>
    public static JsonObject Delta(JsonObject desired, JsonObject reported)
    {
        var result = new JsonObject();
        var made = new List<(JsonObject Parent, string Name, JsonObject Child)>();
        var work = new Stack<(JsonObject Desired, JsonObject Reported, JsonObject Out)>();
        work.Push((desired, reported, result));
        while (work.TryPop(out var item))
        {
            foreach (var (name, wanted) in item.Desired)
            {
                var present = item.Reported.TryGetPropertyValue(name, out var actual);
                if (wanted is JsonObject wantedObject && actual is JsonObject actualObject)
                {
                    var child = new JsonObject();
                    item.Out[name] = child;
                    made.Add((item.Out, name, child));
                    work.Push((wantedObject, actualObject, child));
                }
                else if (!present || !JsonNode.DeepEquals(wanted, actual))
                {
                    item.Out[name] = wanted?.DeepClone();
                }
            }
        }

        // Children were made after their parents: backwards, an emptied child empties its parent in turn.
        for (var i = made.Count - 1; i >= 0; i--)
        {
            if (made[i].Child.Count == 0)
            {
                made[i].Parent.Remove(made[i].Name);
            }
        }

        return result;
    }

    /// <summary>The bound <paramref name="document"/> passes, if any, with the reason; walks it with its own stack.</summary>
    public static TwinLimit? Check(JsonObject document, int byteLength, TwinLimits limits, out string? problem)
    {
        problem = null;
        if (byteLength > limits.MaxDocumentBytes)
        {
            problem = $"the document would be {byteLength} bytes, over the limit of {limits.MaxDocumentBytes}";
            return TwinLimit.DocumentBytes;
        }

        var keys = 0;
        var work = new Stack<(JsonNode Node, int Depth)>();
        work.Push((document, 1));
        while (work.TryPop(out var item))
        {
            if (item.Depth > limits.MaxDepth)
            {
                problem = $"the document would nest deeper than {limits.MaxDepth} levels";
                return TwinLimit.Depth;
            }

            if (item.Node is JsonObject obj)
            {
                keys += obj.Count;
                if (keys > limits.MaxKeys)
                {
                    problem = $"the document would have more than {limits.MaxKeys} keys";
                    return TwinLimit.Keys;
                }

                foreach (var (_, child) in obj)
                {
                    if (child is JsonObject or JsonArray)
                    {
                        work.Push((child, item.Depth + 1));
                    }
                }
            }
            else if (item.Node is JsonArray array)
            {
                foreach (var child in array)
                {
                    if (child is JsonObject or JsonArray)
                    {
                        work.Push((child, item.Depth + 1));
                    }
                }
            }
        }

        return null;
    }

    /// <summary>Compact UTF-8 JSON, non-ASCII text as is (these documents go to devices and APIs, never into HTML).</summary>
    public static byte[] ToUtf8(JsonNode document)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            document.WriteTo(writer);
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static void Add(JsonNode parent, string? name, JsonNode? value)
    {
        if (parent is JsonObject obj)
        {
            obj.Add(name!, value);
        }
        else
        {
            ((JsonArray)parent).Add(value);
        }
    }
}

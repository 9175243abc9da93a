namespace Relay.Server.Mqtt;

/// <summary>
/// The levels of a topic name or filter, as spans of it, for the subscription and retained trees; an empty
/// level between slashes is a level too (MQTT 5.0 §4.7.1.1).
/// </summary>
internal ref struct MqttTopicLevels(string text)
{
    private readonly string _text = text;
    private int _start = -1;
    private int _end = -1;

    public readonly MqttTopicLevels GetEnumerator() => this;

    public readonly ReadOnlySpan<char> Current => _text.AsSpan(_start, _end - _start);

    public bool MoveNext()
    {
        if (_end >= _text.Length)
        {
            return false;
        }

        _start = _end + 1;
        var slash = _text.IndexOf('/', _start);
        _end = slash < 0 ? _text.Length : slash;
        return true;
    }
}

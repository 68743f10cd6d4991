using System.Text.Json;
using System.Text.Json.Serialization;

namespace LivePatch.Live;

/// <summary>Bytes in the record's JSON: a lowercase hex string (<c>"e96bcdffff"</c>), as the record format has always written them.</summary>
internal sealed class HexBytesConverter : JsonConverter<byte[]>
{
    /// <inheritdoc />
    public override byte[] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var text = reader.GetString() ?? throw new JsonException("bytes must be a hex string, not null");
        try
        {
            return Convert.FromHexString(text);
        }
        catch (FormatException error)
        {
            throw new JsonException($"'{(text.Length > 40 ? text[..40] + "..." : text)}' is not a hex string of bytes", error);
        }
    }

    /// <inheritdoc />
    public override void Write(Utf8JsonWriter writer, byte[] value, JsonSerializerOptions options) => writer.WriteStringValue(Convert.ToHexStringLower(value));
}

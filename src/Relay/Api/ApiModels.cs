using System.Text.Json.Serialization;

namespace Relay.Server.Api;

/// <summary><c>POST /v1/devices</c>.</summary>
internal sealed record DeviceCreateRequest(
    [property: JsonPropertyName("id")] string? Id,
    [property: JsonPropertyName("tags")] string[]? Tags);

/// <summary>A device's credentials: the secret is shown in this response only.</summary>
internal sealed record DeviceCredentialsResponse(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("secret")] string Secret);

/// <summary>A device with its presence (from the broker's live session table).</summary>
internal sealed record DeviceResponse(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("tags")] IReadOnlyList<string> Tags,
    [property: JsonPropertyName("createdAt")] DateTimeOffset CreatedAt,
    [property: JsonPropertyName("disabled")] bool Disabled,
    [property: JsonPropertyName("online")] bool Online,
    [property: JsonPropertyName("lastSeen")] DateTimeOffset? LastSeen,
    [property: JsonPropertyName("remoteAddress")] string? RemoteAddress,
    [property: JsonPropertyName("protocolVersion")] int? ProtocolVersion,
    [property: JsonPropertyName("connectedSince")] DateTimeOffset? ConnectedSince,
    [property: JsonPropertyName("connectedSeconds")] long? ConnectedSeconds,
    [property: JsonPropertyName("nat")] string? Nat);

/// <summary>One page of devices; pass <c>next</c> as <c>after</c> for the next page (null: last page).</summary>
internal sealed record DeviceListResponse(
    [property: JsonPropertyName("items")] IReadOnlyList<DeviceResponse> Items,
    [property: JsonPropertyName("next")] string? Next);

/// <summary><c>PUT /v1/devices/{id}/tags</c>.</summary>
internal sealed record DeviceTagsRequest([property: JsonPropertyName("tags")] string[]? Tags);

/// <summary><c>POST /v1/tokens</c>.</summary>
internal sealed record TokenCreateRequest(
    [property: JsonPropertyName("name")] string? Name,
    [property: JsonPropertyName("scopes")] string[]? Scopes);

/// <summary>A new token: <c>token</c> is shown in this response only.</summary>
internal sealed record TokenCreatedResponse(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("scopes")] IReadOnlyList<string> Scopes,
    [property: JsonPropertyName("createdAt")] DateTimeOffset CreatedAt,
    [property: JsonPropertyName("token")] string Token);

internal sealed record TokenListResponse([property: JsonPropertyName("items")] IReadOnlyList<ApiTokenInfo> Items);

[JsonSerializable(typeof(DeviceCreateRequest))]
[JsonSerializable(typeof(DeviceCredentialsResponse))]
[JsonSerializable(typeof(DeviceResponse))]
[JsonSerializable(typeof(DeviceListResponse))]
[JsonSerializable(typeof(DeviceTagsRequest))]
[JsonSerializable(typeof(TokenCreateRequest))]
[JsonSerializable(typeof(TokenCreatedResponse))]
[JsonSerializable(typeof(TokenListResponse))]
internal sealed partial class ApiModelJson : JsonSerializerContext;

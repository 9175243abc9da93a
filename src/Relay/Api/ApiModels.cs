
namespace Relay.Server.Api;

/// <summary><c>POST /v1/devices</c>.</summary>
internal sealed record DeviceCreateRequest(string? Id, string[]? Tags);

/// <summary>A device's credentials: the secret is shown in this response only.</summary>
internal sealed record DeviceCredentialsResponse(string Id, string Secret);

/// <summary>A device with its presence (from the broker's live session table).</summary>
internal sealed record DeviceResponse(
    string Id,
    IReadOnlyList<string> Tags,
    DateTimeOffset CreatedAt,
    bool Disabled,
    bool Online,
    DateTimeOffset? LastSeen,
    string? RemoteAddress,
    int? ProtocolVersion,
    DateTimeOffset? ConnectedSince,
    long? ConnectedSeconds,
    string? Nat);

/// <summary>One page of devices; pass <c>next</c> as <c>after</c> for the next page (null: last page).</summary>
internal sealed record DeviceListResponse(IReadOnlyList<DeviceResponse> Items, string? Next);

/// <summary><c>PUT /v1/devices/{id}/tags</c>.</summary>
internal sealed record DeviceTagsRequest(string[]? Tags);

/// <summary><c>POST /v1/tokens</c>.</summary>
internal sealed record TokenCreateRequest(string? Name, string[]? Scopes);

/// <summary>A new token: <c>token</c> is shown in this response only.</summary>
internal sealed record TokenCreatedResponse(string Id, string Name, IReadOnlyList<string> Scopes, DateTimeOffset CreatedAt, string Token);

internal sealed record TokenListResponse(IReadOnlyList<ApiTokenInfo> Items);

using System.Globalization;
using Relay.Server.Devices;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt;
using Relay.Server.Push;
using Relay.Server.Push.Commands;
using Relay.Server.Twins;

namespace Relay.Server.Api;

/// <summary>
/// <c>/v1/devices</c>: provisioning (admin scope) and reading devices with their presence (read scope).
/// Secrets are generated here like <c>relay devices add</c> does and returned once; only their PBKDF2
/// hash is stored.
/// </summary>
internal static class DeviceEndpoints
{
    public const int DefaultPageSize = 100;
    public const int MaxPageSize = 1000;

    private const string CreateExample = """{"id": "sensor-1", "tags": ["lab"]}""";
    private const string TagsExample = """{"tags": ["lab", "floor:2"]}""";

    public static void Map(WebApplication app)
    {
        app.MapPost("/v1/devices", CreateAsync);
        app.MapGet("/v1/devices", ListAsync);
        app.MapGet("/v1/devices/{id}", GetAsync);
        app.MapDelete("/v1/devices/{id}", DeleteAsync);
        app.MapPost("/v1/devices/{id}/secret", RotateSecretAsync);
        app.MapPut("/v1/devices/{id}/tags", SetTagsAsync);
    }

    private static async Task<IResult> CreateAsync(HttpContext http, IDeviceRegistry registry)
    {
        if (ApiAuth.Authorize(http, ApiScope.Admin) is { } refused)
        {
            return refused;
        }

        var (request, error) = await ApiBody.ReadAsync(http, ApiJsonContext.Default.DeviceCreateRequest, CreateExample);
        if (error is not null)
        {
            return error;
        }

        if (request!.Id is null || !DeviceId.IsValid(request.Id))
        {
            return ApiProblems.BadRequest($"'id' must match [A-Za-z0-9._-]{{1,{DeviceId.MaxLength}}} (it becomes the MQTT client id and username, and a topic level in devices/{{id}}/...); got {(request.Id is null ? "none" : $"'{request.Id}'")}.");
        }

        var tags = request.Tags ?? [];
        if (DeviceTags.Validate(tags) is { } problem)
        {
            return ApiProblems.BadRequest($"'tags': {problem}.");
        }

        var secret = DeviceSecretHasher.Generate();
        if (!await registry.AddAsync(request.Id, secret, [], tags, http.RequestAborted))
        {
            return ApiProblems.Problem(409, "Device exists", $"A device '{request.Id}' is already registered. Choose another id, or rotate its secret with POST /v1/devices/{request.Id}/secret.");
        }

        return Results.Json(new DeviceCredentialsResponse(request.Id, secret), ApiJsonContext.Default.DeviceCredentialsResponse, statusCode: 201);
    }

    private static async Task<IResult> ListAsync(HttpContext http, IDeviceRegistry registry)
    {
        if (ApiAuth.Authorize(http, ApiScope.Read) is { } refused)
        {
            return refused;
        }

        var query = http.Request.Query;
        var limit = DefaultPageSize;
        if (query["limit"].ToString() is { Length: > 0 } limitText
            && (!int.TryParse(limitText, NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxPageSize))
        {
            return ApiProblems.BadRequest($"'limit' must be a whole number from 1 to {MaxPageSize}; got '{limitText}'.");
        }

        bool? online = null;
        if (query["online"].ToString() is { Length: > 0 } onlineText)
        {
            if (!bool.TryParse(onlineText, out var o))
            {
                return ApiProblems.BadRequest($"'online' must be true or false; got '{onlineText}'.");
            }

            online = o;
        }

        var tag = query["tag"].ToString() is { Length: > 0 } t ? t : null;
        if (tag is not null && !DeviceTags.IsValid(tag))
        {
            return ApiProblems.BadRequest($"'tag' must match {DeviceTags.Rule}; got '{tag}'.");
        }

        var after = query["after"].ToString() is { Length: > 0 } a ? a : null;
        var presence = OfflineDevicePresence.Resolve(http.RequestServices);
        var now = TimeProvider(http).GetUtcNow();
        var items = new List<DeviceResponse>(Math.Min(limit, 64));
        var cursor = after;
        string? next = null;

        // Presence lives in memory and the registry in SQLite: with an online filter we read pages of
        // the registry until the page is full or the registry is exhausted, so a page is never short
        // while more matching devices exist (a short page means "last page" to clients).
        while (items.Count < limit)
        {
            var page = await registry.ListAsync(tag, cursor, limit, http.RequestAborted);
            foreach (var device in page)
            {
                cursor = device.Id;
                if (online is { } wanted && presence.IsOnline(device.Id) != wanted)
                {
                    continue;
                }

                items.Add(Describe(device, presence.Get(device.Id), now));
                if (items.Count == limit)
                {
                    next = device.Id;
                    break;
                }
            }

            if (page.Count < limit)
            {
                break;
            }
        }

        return Results.Json(new DeviceListResponse(items, next), ApiJsonContext.Default.DeviceListResponse);
    }

    private static async Task<IResult> GetAsync(HttpContext http, IDeviceRegistry registry, string id)
    {
        if (ApiAuth.Authorize(http, ApiScope.Read) is { } refused)
        {
            return refused;
        }

        return await FindAsync(http, registry, id);
    }

    private static async Task<IResult> FindAsync(HttpContext http, IDeviceRegistry registry, string id)
    {
        var device = await registry.FindAsync(id, http.RequestAborted);
        if (device is null)
        {
            return UnknownDevice(id);
        }

        var presence = OfflineDevicePresence.Resolve(http.RequestServices);
        return Results.Json(Describe(device, presence.Get(id), TimeProvider(http).GetUtcNow()), ApiJsonContext.Default.DeviceResponse);
    }

    private static async Task<IResult> DeleteAsync(HttpContext http, IDeviceRegistry registry, string id)
    {
        if (ApiAuth.Authorize(http, ApiScope.Admin) is { } refused)
        {
            return refused;
        }

        if (!await registry.RemoveAsync(id, http.RequestAborted))
        {
            return UnknownDevice(id);
        }

        // Nothing the deleted device left may pass to a device registered again under its id (review L9):
        // its commands end, then its connection, its MQTT session and its retained messages go. Not
        // cancelable by the caller going away: the device is gone from the registry already.
        if (http.RequestServices.GetService<CommandService>() is { } commands)
        {
            await commands.EndCommandsOfAsync(id, CancellationToken.None);
        }

        if (http.RequestServices.GetService<TwinService>() is { } twins)
        {
            await twins.ForgetAsync(id, CancellationToken.None);
        }

        if (http.RequestServices.GetService<IDeviceConnections>() is { } connections)
        {
            await connections.ForgetAsync(id, CancellationToken.None);
        }

        return Results.NoContent();
    }

    private static async Task<IResult> RotateSecretAsync(HttpContext http, IDeviceRegistry registry, string id)
    {
        if (ApiAuth.Authorize(http, ApiScope.Admin) is { } refused)
        {
            return refused;
        }

        if (!DeviceId.IsValid(id))
        {
            return UnknownDevice(id);
        }

        var secret = DeviceSecretHasher.Generate();
        if (!await registry.SetSecretAsync(id, secret, http.RequestAborted))
        {
            return UnknownDevice(id);
        }

        // Rotation usually means the old secret leaked: the connection made with it ends now.
        http.RequestServices.GetService<IDeviceConnections>()?.Disconnect(id);
        return Results.Json(new DeviceCredentialsResponse(id, secret), ApiJsonContext.Default.DeviceCredentialsResponse);
    }

    private static async Task<IResult> SetTagsAsync(HttpContext http, IDeviceRegistry registry, string id)
    {
        if (ApiAuth.Authorize(http, ApiScope.Admin) is { } refused)
        {
            return refused;
        }

        var (request, error) = await ApiBody.ReadAsync(http, ApiJsonContext.Default.DeviceTagsRequest, TagsExample);
        if (error is not null)
        {
            return error;
        }

        if (request!.Tags is null)
        {
            return ApiProblems.BadRequest($"'tags' is required (an empty array removes every tag), for example {TagsExample}.");
        }

        if (DeviceTags.Validate(request.Tags) is { } problem)
        {
            return ApiProblems.BadRequest($"'tags': {problem}.");
        }

        if (!await registry.SetTagsAsync(id, request.Tags, http.RequestAborted))
        {
            return UnknownDevice(id);
        }

        return await FindAsync(http, registry, id);
    }

    private static DeviceResponse Describe(DeviceRecord device, DevicePresence presence, DateTimeOffset now) => new(
        device.Id,
        device.Tags,
        device.CreatedAt,
        device.Disabled,
        presence.Online,
        presence.LastSeen,
        presence.RemoteEndPoint?.ToString(),
        presence.ProtocolVersion == 0 ? null : presence.ProtocolVersion,
        presence.ConnectedSince,
        presence is { Online: true, ConnectedSince: { } since } ? (long)(now - since).TotalSeconds : null,
        presence.Nat);

    private static IResult UnknownDevice(string id) =>
        ApiProblems.NotFound("device", id, "List devices with GET /v1/devices, or register it with POST /v1/devices.");

    private static TimeProvider TimeProvider(HttpContext http) => http.RequestServices.GetService<TimeProvider>() ?? System.TimeProvider.System;
}

namespace Relay.Server.Mqtt;

/// <summary><c>Relay:Mqtt</c>: the device connection plane (MQTT 3.1.1 and 5.0).</summary>
public sealed class MqttOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Mqtt";

    /// <summary>False turns every MQTT listener off.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Plain TCP port.</summary>
    public int Port { get; set; } = 1883;

    /// <summary>TLS port; served only when <c>Relay:Tls</c> has a certificate.</summary>
    public int TlsPort { get; set; } = 8883;

    /// <summary>Addresses to listen on; empty means all.</summary>
    public IList<string> ListenAddresses { get; } = [];

    /// <summary>What carries plain TCP (<see cref="MqttTcpTransport"/>).</summary>
    public MqttTcpTransport TcpTransport { get; set; } = MqttTcpTransport.Sockets;

    /// <summary>Serve MQTT over WebSocket at <c>/mqtt</c> on the HTTP port (subprotocol <c>mqtt</c>).</summary>
    public bool WebSocket { get; set; } = true;

    /// <summary>TLS client certificates (<see cref="MqttClientCertificateMode"/>).</summary>
    public MqttClientCertificateMode ClientCertificateMode { get; set; } = MqttClientCertificateMode.None;

    /// <summary>
    /// PEM bundle of the CAs that issue device certificates; required when <see cref="ClientCertificateMode"/> is
    /// not None. Chains are built against it alone (never the system store), with the intermediates the client sends.
    /// </summary>
    public string? ClientCertificateAuthorityPath { get; set; }

    /// <summary>Accept CONNECTs without credentials and zero-length client ids (a lab broker), still within the ACL rules.</summary>
    public bool AllowAnonymous { get; set; }

    /// <summary>Largest packet accepted or sent, in bytes (remaining length plus header). MQTT 5 clients are told it in CONNACK.</summary>
    public int MaxPacketSize { get; set; } = 256 * 1024;

    /// <summary>
    /// Largest packet a connection may send before its CONNECT is accepted (the CONNECT itself, will included).
    /// A larger declared length closes the connection before anything is buffered (review L6).
    /// </summary>
    public int MaxPreConnectPacketBytes { get; set; } = 16 * 1024;

    /// <summary>
    /// Output one connection may have written and not yet had taken by its peer (review H3). Past it, QoS 0
    /// messages to it are dropped; a packet that must go (an acknowledgement, PINGRESP, a QoS 1/2 message)
    /// closes the connection instead (v5: DISCONNECT 0x97 Quota exceeded), as does staying over it for 10 s.
    /// </summary>
    public int MaxPendingOutputBytes { get; set; } = 1024 * 1024;

    /// <summary>QoS 1 and 2 messages sent to one client and not yet acknowledged; also the Receive Maximum we announce.</summary>
    public int MaxInflight { get; set; } = 32;

    /// <summary>Messages queued for one session (offline or beyond the inflight window).</summary>
    public int MaxQueuedMessages { get; set; } = 1000;

    /// <summary>What a full queue does with a new message (<see cref="MqttQueueDropPolicy"/>).</summary>
    public MqttQueueDropPolicy QueueDropPolicy { get; set; } = MqttQueueDropPolicy.DropOldest;

    /// <summary>Concurrent MQTT connections from one IP address.</summary>
    public int MaxConnectionsPerIp { get; set; } = 100;

    /// <summary>Seconds a new connection has to send a complete CONNECT (slowloris guard).</summary>
    public int ConnectTimeoutSeconds { get; set; } = 10;

    /// <summary>Upper bound on the keep-alive a client may ask for; MQTT 5 clients asking for more (or 0) get Server Keep Alive.</summary>
    public int MaxKeepAliveSeconds { get; set; } = 1200;

    /// <summary>Upper bound on MQTT 5 Session Expiry Interval; MQTT 3.1.1 persistent sessions get this expiry.</summary>
    public uint MaxSessionExpirySeconds { get; set; } = 7 * 24 * 3600;

    /// <summary>Topic Alias Maximum announced to MQTT 5 clients (0 = no aliases from clients).</summary>
    public int TopicAliasMaximum { get; set; } = 64;

    /// <summary>Retained messages kept in total.</summary>
    public int MaxRetainedMessages { get; set; } = 100_000;

    /// <summary>
    /// Bytes (payload plus topic) of all retained messages together (review H4): they live in memory and are
    /// all loaded at start. A retained PUBLISH that would go past it is refused (v5 0x97; 3.1.1 not retained).
    /// </summary>
    public long MaxRetainedBytes { get; set; } = 256L * 1024 * 1024;

    /// <summary>Largest payload a retained message may have; a larger retained PUBLISH is refused as <see cref="MaxRetainedBytes"/> says.</summary>
    public int MaxRetainedPayloadBytes { get; set; } = 64 * 1024;

    /// <summary>Retained messages one client id may hold (the last publisher of a topic holds it), so no client can use up the server's.</summary>
    public int MaxRetainedMessagesPerClient { get; set; } = 1000;

    /// <summary>Bytes (payload plus topic) of the retained messages one client id may hold.</summary>
    public long MaxRetainedBytesPerClient { get; set; } = 8L * 1024 * 1024;

    /// <summary>
    /// Levels a topic name or filter may have (PUBLISH, SUBSCRIBE, wills, topic aliases). Deeper ones are
    /// refused: v5 0x90 / 0x8F, 3.1.1 a closed connection or SUBACK 0x80.
    /// </summary>
    public int MaxTopicLevels { get; set; } = 32;

    /// <summary>UTF-8 bytes a topic name or filter may have; longer ones are refused as <see cref="MaxTopicLevels"/> says.</summary>
    public int MaxTopicLength { get; set; } = 1024;

    /// <summary>Subscriptions per session.</summary>
    public int MaxSubscriptionsPerSession { get; set; } = 100;

    /// <summary>Seconds between <c>$SYS/broker/...</c> statistics publications (0 = off).</summary>
    public int SysIntervalSeconds { get; set; } = 10;

    /// <summary>Failed CONNECT authentications allowed per source (an IPv4 address or an IPv6 /64) per minute before further attempts are refused without checking.</summary>
    public int AuthFailuresPerMinutePerIp { get; set; } = 10;

    /// <summary>PBKDF2 verifications (person-chosen device secrets) computed at once; 0 = cores − 1 (at least 1).</summary>
    public int SlowHashConcurrency { get; set; }

    /// <summary>PBKDF2 verifications that may wait for a slot; beyond it (or after half the CONNECT timeout) the CONNECT gets "server busy".</summary>
    public int SlowHashMaxWaiting { get; set; } = 256;

    /// <summary>Ordered ACL rules; the first that matches decides. See docs/mqtt.md.</summary>
    public IList<MqttAclRuleOptions> Acl { get; } = [];

    /// <summary>Back-end accounts with configured grants (<c>name</c>, <c>password</c>, <c>grants</c>).</summary>
    public IList<MqttServiceAccountOptions> ServiceAccounts { get; } = [];

    /// <summary>Devices provisioned from configuration at start (<c>id</c>, <c>secret</c>); stored hashed in the registry.</summary>
    public IList<MqttDeviceOptions> Devices { get; } = [];

    /// <summary>Optional HTTP authentication hook.</summary>
    public MqttAuthHookOptions AuthHook { get; set; } = new();
}

/// <summary>One ACL rule: allow or deny an action on a topic filter to clients matching a username or client-id pattern.</summary>
public sealed class MqttAclRuleOptions
{
    /// <summary><c>allow</c> or <c>deny</c> (any case).</summary>
    public MqttAclPermission Permission { get; set; } = MqttAclPermission.Allow;

    /// <summary>Username pattern (<c>*</c> matches any; a trailing <c>*</c> is a prefix match); null matches any.</summary>
    public string? Username { get; set; }

    /// <summary>Client-id pattern, as <see cref="Username"/>.</summary>
    public string? ClientId { get; set; }

    /// <summary>MQTT topic filter; <c>%u</c> and <c>%c</c> stand for the username and client id.</summary>
    public string Topic { get; set; } = "#";

    /// <summary><c>publish</c>, <c>subscribe</c> or <c>all</c> (any case).</summary>
    public MqttAclAction Action { get; set; } = MqttAclAction.All;
}

/// <summary>A back-end account.</summary>
public sealed class MqttServiceAccountOptions
{
    /// <summary>Username.</summary>
    public string Name { get; set; } = string.Empty;

    /// <summary>Password (plain in configuration; compared in constant time).</summary>
    public string Password { get; set; } = string.Empty;

    /// <summary>Topic filters it may use, each optionally prefixed <c>pub:</c> or <c>sub:</c> (default both).</summary>
    public IList<string> Grants { get; } = [];
}

/// <summary>A device provisioned from configuration.</summary>
public sealed class MqttDeviceOptions
{
    /// <summary>Device id = MQTT client id = username.</summary>
    public string Id { get; set; } = string.Empty;

    /// <summary>Secret = MQTT password.</summary>
    public string Secret { get; set; } = string.Empty;
}

/// <summary>HTTP authentication hook (the LDAP/IAM integration point brokers offer).</summary>
public sealed class MqttAuthHookOptions
{
    /// <summary>URL to call; empty turns the hook off.</summary>
    public string? Url { get; set; }

    /// <summary><c>Post</c> (JSON body), the only method accepted: <c>Get</c> would put the password in the URL (review L2).</summary>
    public MqttAuthHookMethod Method { get; set; } = MqttAuthHookMethod.Post;

    /// <summary>Per-attempt timeout in milliseconds.</summary>
    public int TimeoutMilliseconds { get; set; } = 2000;

    /// <summary>Retries after a failed attempt (timeout, connection error, 5xx).</summary>
    public int Retries { get; set; } = 1;

    /// <summary>True: consult the hook only when the built-in store does not know the user; false: the hook decides alone.</summary>
    public bool FallbackOnly { get; set; } = true;
}

/// <summary><c>Relay:Mqtt:TcpTransport</c>: what carries plain TCP (TLS always rides on Kestrel).</summary>
public enum MqttTcpTransport
{
    /// <summary>Our own socket transport: an idle connection holds no buffer.</summary>
    Sockets,

    /// <summary>Kestrel's socket transport.</summary>
    Kestrel,
}

/// <summary><c>Relay:Mqtt:ClientCertificateMode</c>: TLS client certificates on the MQTT TLS port.</summary>
public enum MqttClientCertificateMode
{
    /// <summary>Not asked for.</summary>
    None,

    /// <summary>Asked for; a valid certificate whose subject CN is a registered device id authenticates it.</summary>
    Optional,

    /// <summary>A connection without a valid certificate is refused during the handshake.</summary>
    Required,
}

/// <summary><c>Relay:Mqtt:QueueDropPolicy</c>: what a full session queue does with a new message.</summary>
public enum MqttQueueDropPolicy
{
    /// <summary>Drop the oldest queued message to make room.</summary>
    DropOldest,

    /// <summary>Refuse the new message.</summary>
    DropNewest,
}

/// <summary><c>Relay:Mqtt:Acl:N:Permission</c>.</summary>
public enum MqttAclPermission
{
    /// <summary>A matching rule allows.</summary>
    Allow,

    /// <summary>A matching rule denies.</summary>
    Deny,
}

/// <summary><c>Relay:Mqtt:Acl:N:Action</c>: what a rule covers.</summary>
public enum MqttAclAction
{
    /// <summary>PUBLISH.</summary>
    Publish = 1,

    /// <summary>SUBSCRIBE.</summary>
    Subscribe = 2,

    /// <summary>Both.</summary>
    All = 3,
}

/// <summary><c>Relay:Mqtt:AuthHook:Method</c>: how the hook receives the credentials.</summary>
public enum MqttAuthHookMethod
{
    /// <summary>A JSON body.</summary>
    Post,

    /// <summary>Refused at start (review L2): it put the password in the query string, where access logs keep it.</summary>
    Get,
}

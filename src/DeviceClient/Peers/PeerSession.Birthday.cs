using System.Net;
using System.Net.Sockets;

namespace Relay.DeviceClient.Peers;

internal sealed partial class PeerSession
{
    private const string Symmetric = "Symmetric";

    /// <summary>
    /// Birthday-paradox probing (Tailscale, "How NAT traversal works"), when exactly one side is symmetric:
    /// that side opens <see cref="PeerOptions.BirthdayPorts"/> sockets, each sending checks to the easy side's
    /// public address, so its NAT opens that many mappings; the easy side checks random ports of the symmetric
    /// side's public address. With 256 mappings, 2048 random probes hit one with probability ≈ 1 - (1 - 256/64512)^2048
    /// ≈ 99.97 %. Both halves stop at the first direct path, after <see cref="PeerOptions.BirthdayWindow"/>, and
    /// the easy side after <see cref="PeerOptions.BirthdayProbes"/> probes.
    /// </summary>
    private async Task BirthdayAsync()
    {
        var localSymmetric = string.Equals(_setup.LocalNat, Symmetric, StringComparison.Ordinal);
        var remoteSymmetric = string.Equals(_setup.RemoteNat, Symmetric, StringComparison.Ordinal);
        if (!_options.BirthdayProbing || localSymmetric == remoteSymmetric || _remoteReflexive is null)
        {
            return;
        }

        var started = _time.GetTimestamp();
        var window = _options.BirthdayWindow;
        try
        {
            if (localSymmetric)
            {
                await OpenBirthdaySocketsAsync(started, window).ConfigureAwait(false);
            }
            else
            {
                await ProbeRandomPortsAsync(started, window).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            CloseUnusedBirthdaySockets();
        }
    }

    private async Task OpenBirthdaySocketsAsync(long started, TimeSpan window)
    {
        var target = _remoteReflexive!;
        var local = _sockets[0].Socket.LocalEndPoint as IPEndPoint;
        List<LocalSocket> opened = [];
        for (var i = 0; i < Math.Clamp(_options.BirthdayPorts, 0, 1024); i++)
        {
            var socket = new Socket(target.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            try
            {
                socket.Bind(new IPEndPoint(local?.Address ?? IPAddress.Any, 0));
            }
            catch (SocketException)
            {
                socket.Dispose();
                break; // out of ports or descriptors: probe with what we have
            }

            var extra = new LocalSocket(socket, extra: true);
            lock (_gate)
            {
                if (_stop.IsCancellationRequested)
                {
                    socket.Dispose();
                    return;
                }

                _sockets.Add(extra);
            }

            opened.Add(extra);
            Interlocked.Increment(ref _birthdaySockets);
            StartReceiveLoop(extra);
        }

        // Each socket re-sends its check once a second, so its mapping exists when the easy side's probe lands.
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1), _time);
        do
        {
            if (_direct is not null || _time.GetElapsedTime(started) >= window)
            {
                return;
            }

            foreach (var socket in opened)
            {
                SendCheck(socket, target, TransactionKind.Probe);
            }
        }
        while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false));
    }

    private async Task ProbeRandomPortsAsync(long started, TimeSpan window)
    {
        var address = _remoteReflexive!.Address;
        var limit = Math.Max(0, _options.BirthdayProbes);
        using var timer = new PeriodicTimer(Tick, _time);
        do
        {
            var elapsed = _time.GetElapsedTime(started);
            if (_direct is not null || elapsed >= window || ProbesSent >= limit)
            {
                return;
            }

            // Spread evenly over the window: by now, this share of the budget is due.
            var due = (long)Math.Ceiling(limit * Math.Min(1, elapsed / window)) - ProbesSent;
            for (var i = 0; i < due && ProbesSent < limit; i++)
            {
                SendCheck(_sockets[0], new IPEndPoint(address, Random.Shared.Next(1024, 65536)), TransactionKind.Probe);
            }
        }
        while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false));
    }

    private void CloseUnusedBirthdaySockets()
    {
        List<LocalSocket> closing = [];
        lock (_gate)
        {
            foreach (var socket in _sockets)
            {
                if (socket.Extra && (_direct is not { } d || d.Socket != socket))
                {
                    closing.Add(socket);
                }
            }

            _sockets.RemoveAll(closing.Contains);
        }

        foreach (var socket in closing)
        {
            socket.Socket.Dispose();
        }
    }
}

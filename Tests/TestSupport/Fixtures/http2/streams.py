# Opens COUNT watches on ONE HTTP/2 connection, past the server's advertised limit (as the
# recording's h2watch.py does), then cancels one and asks for /version on a new stream: prints
# what the server answered each stream, its SETTINGS, and whether the connection stayed up.
# usage: streams.py PORT CAFILE TOKEN COUNT
import collections, json, socket, ssl, sys, time
import h2.config, h2.connection, h2.events

port, cafile, token, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())
status, remote, closed, pongs = {}, {}, [], []

def pump(until, limit=60.0):
    start = time.time()
    sock.settimeout(0.2)
    while not until() and time.time() - start < limit:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            closed.append("eof")
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                remote.update({str(int(k)): v.new_value for k, v in event.changed_settings.items()})
            elif isinstance(event, h2.events.ResponseReceived):
                status[event.stream_id] = dict(event.headers)[b":status"].decode()
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                status[event.stream_id] = "reset %d" % event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                closed.append("goaway %d" % event.error_code)
            elif isinstance(event, h2.events.PingAckReceived):
                pongs.append(event.ping_data)
        sock.sendall(conn.data_to_send())

def request(path):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1:%d" % port), (":path", path),
                            ("authorization", "Bearer " + token), ("accept", "application/json")], end_stream=True)
    sock.sendall(conn.data_to_send())
    return sid

pump(lambda: "3" in remote, 10)
conn.remote_settings._settings[3] = collections.deque([10 ** 6])  # let the client go past the advertised limit
streams = [request("/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=120") for _ in range(count)]
pump(lambda: all(s in status for s in streams) or closed)
answers = collections.Counter(status.get(s, "none") for s in streams)
first_ok = next((s for s in streams if status.get(s) == "200"), None)
after = None
if first_ok is not None and not closed:
    conn.reset_stream(first_ok)
    # The server handles frames in order: its answer to a PING sent after the reset says the
    # reset has been taken.
    conn.ping(b"kbreset1")
    sock.sendall(conn.data_to_send())
    pump(lambda: b"kbreset1" in pongs or closed)
    after = request("/version")
    pump(lambda: after in status or closed)
print(json.dumps({"answers": answers, "settings": remote, "closed": closed,
                  "after_cancel": status.get(after, "none") if after else None}))

# A pass-through TCP proxy in front of nats-server that replaces the nonce of the first
# connection's INFO with another one, so that the client's signature of it is refused; later
# connections pass unchanged. It writes its port to PORT_FILE and a line per connection to LOG.
# usage: python3 nonceproxy.py UPSTREAM_PORT NONCE PORT_FILE LOG
import asyncio, re, sys
UP, NONCE, PORT_FILE, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
connections = 0
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data); await writer.drain()
    except Exception: pass
    finally: writer.close()
async def handle(cr, cw):
    global connections
    connections += 1
    first = connections == 1
    with open(LOG, "a") as log: log.write(f"connection {connections}\n")
    ur, uw = await asyncio.open_connection("127.0.0.1", UP)
    info = await ur.readline()
    if first: info = re.sub(rb'"nonce":"[^"]*"', b'"nonce":"' + NONCE.encode() + b'"', info)
    cw.write(info); await cw.drain()
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(PORT_FILE + ".tmp", "w") as f: f.write(str(server.sockets[0].getsockname()[1]))
    import os; os.rename(PORT_FILE + ".tmp", PORT_FILE)
    async with server: await server.serve_forever()
asyncio.run(main())

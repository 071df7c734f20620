# A pass-through TCP proxy in front of nats-server that replaces the nonce in the INFO of one
# connection (the Nth that reached the server) with another, so that the client's signature of
# it is refused; other connections pass unchanged. It writes its port to PORT_FILE and a line
# per connection that reached the server to LOG.
# usage: python3 nonceproxy.py UPSTREAM_PORT NONCE N PORT_FILE LOG
import asyncio, os, re, sys
UP, NONCE, N, PORT_FILE, LOG = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
served = 0
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data); await writer.drain()
    except Exception: pass
    finally: writer.close()
async def handle(cr, cw):
    global served
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", UP)
        info = await ur.readline()
    except Exception:
        cw.close(); return
    served += 1
    with open(LOG, "a") as log: log.write(f"connection {served}\n")
    if served == N: info = re.sub(rb'"nonce":"[^"]*"', b'"nonce":"' + NONCE.encode() + b'"', info)
    cw.write(info); await cw.drain()
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(PORT_FILE + ".tmp", "w") as f: f.write(str(server.sockets[0].getsockname()[1]))
    os.rename(PORT_FILE + ".tmp", PORT_FILE)
    async with server: await server.serve_forever()
asyncio.run(main())

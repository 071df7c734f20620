# A pass-through TCP proxy in front of tansu for Debian's librdkafka 2.0.2, which misreads the
# tagged fields at the end of tansu's ApiVersions v3+ responses: it cuts them and passes every
# other byte through unchanged.
# usage: python3 avproxy.py LISTEN_PORT UPSTREAM_PORT   (tansu must advertise LISTEN_PORT)
import asyncio, struct, sys
LP, UP = int(sys.argv[1]), int(sys.argv[2])
async def handle(cr, cw):
    ur, uw = await asyncio.open_connection("127.0.0.1", UP); pending = {}
    async def c2u():
        try:
            while True:
                hdr = await cr.readexactly(4); body = await cr.readexactly(struct.unpack(">i", hdr)[0])
                k, v, corr = struct.unpack(">hhi", body[:8]); pending[corr] = (k, v)
                uw.write(hdr + body); await uw.drain()
        except Exception: pass
        finally: uw.close()
    async def u2c():
        try:
            while True:
                hdr = await ur.readexactly(4); body = await ur.readexactly(struct.unpack(">i", hdr)[0])
                k, v = pending.pop(struct.unpack(">i", body[:4])[0], (None, None))
                if k == 18 and v >= 3:   # ApiVersions v3+: cut trailing tagged fields
                    p = 7 + (body[6] - 1) * 7 + 4   # corr(4)+err(2)+count(1)+entries(7 each, 1-byte counts only)+throttle(4)
                    body = body[:p] + b"\x00"
                cw.write(struct.pack(">i", len(body)) + body); await cw.drain()
        except Exception: pass
        finally: cw.close()
    await asyncio.gather(c2u(), u2c())
async def main():
    async with await asyncio.start_server(handle, "127.0.0.1", LP) as srv: await srv.serve_forever()
asyncio.run(main())

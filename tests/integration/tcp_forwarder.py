"""A TCP-only port forwarder, for tests: `python tcp_forwarder.py LISTEN_ADDR PORT TARGET_ADDR
TARGET_PORT`. Each accepted connection is joined to a new one to the target; bytes flow both
ways until either side closes. Nothing listens on UDP, so a tinc node reached through it can
talk to its peer over the meta connection but never over UDP: the "UDP blocked, TCP works" path
without iptables. Prints "ready" on stdout once listening. Runs until killed.
"""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def main(listen_addr, port, target_addr, target_port):
    async def handle(reader, writer):
        try:
            t_reader, t_writer = await asyncio.open_connection(target_addr, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, t_writer), pipe(t_reader, writer))

    server = await asyncio.start_server(handle, listen_addr, port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen, lport, target, tport = sys.argv[1:5]
    asyncio.run(main(listen, int(lport), target, int(tport)))

"""A trivial picows echo server: the yardstick for the load generator's own ceiling.

It does as little as a WebSocket server can (each message is sent straight back), so whatever
rate the load generator reaches against it, and the client CPU it spends per message, bound what
the load generator can measure.

Run: python -m bench.peers.echo_picows --port 8093
"""

from __future__ import annotations

import argparse

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class EchoListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_bytes())


def make_listener(request: WSUpgradeRequest) -> EchoListener:
    return EchoListener()


async def main(host: str, port: int) -> None:
    server = await ws_create_server(make_listener, host, port)
    print(f"PEER READY ws://{host}:{port}/ws", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8093)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))

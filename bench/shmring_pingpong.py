"""Round trip between two processes over two `ShmRing`s (the consumer sleeps on the futex on both
sides): what one worker ↔ control hop costs, without any Kefu logic.

    python -m bench.shmring_pingpong
"""

from __future__ import annotations

import subprocess
import sys
import time

from kefu import compiled

ROUND_TRIPS = 3000
RECORD = b"x" * 200


def echo(inbound_fd: int, outbound_fd: int) -> None:
    inbound, outbound = compiled.ShmRing.open(inbound_fd), compiled.ShmRing.open(outbound_fd)
    echoed = 0
    while echoed < ROUND_TRIPS:
        inbound.wait(1.0)
        for record in inbound.drain(64):
            outbound.push(record)
            echoed += 1


def main() -> None:
    there, back = compiled.ShmRing.create(1024, 64), compiled.ShmRing.create(1024, 64)
    child = subprocess.Popen([sys.executable, "-m", "bench.shmring_pingpong", "echo", str(there.fd), str(back.fd)],
                             pass_fds=(there.fd, back.fd))
    time.sleep(1.0)  # the child's interpreter start is not part of a round trip
    rtts = []
    for _ in range(ROUND_TRIPS):
        started = time.perf_counter()
        there.push(RECORD)
        while not back.drain(1):
            back.wait(1.0)
        rtts.append(time.perf_counter() - started)
    child.wait()
    rtts.sort()
    print(f"{ROUND_TRIPS} round trips: p50 {rtts[len(rtts) // 2] * 1e6:.0f} µs, "
          f"p99 {rtts[int(len(rtts) * 0.99)] * 1e6:.0f} µs, max {rtts[-1] * 1e6:.0f} µs")


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo"]:
        echo(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()

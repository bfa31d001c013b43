"""What serving the live lab costs the simulation (run by hand):

    pip install websockets
    python scripts/serve_cost.py [--bin target/release/atheria] [--grid 128] [--clients 2]

Starts `atheria serve` on the CPU backend with the shipped model, then alternates periods with
no client (nothing is rendered) and with N WebSocket clients reading every frame at the default
frame rate and views (A B A B ...), reading the server's own steps/s from GET /status. Prints
each period, the median ratio with its range, and `atheria bench` of the same grid for scale.
"""
import argparse
import asyncio
import json
import re
import statistics
import subprocess
import time
import urllib.request

import websockets


async def read_frames(port, stop):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as socket:
        frames = 0
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(socket.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            frames += isinstance(message, bytes)
        return frames


def rate(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status") as response:
        return json.load(response)["steps_per_s"]


async def period(port, clients, seconds):
    stop = asyncio.Event()
    readers = [asyncio.create_task(read_frames(port, stop)) for _ in range(clients)]
    await asyncio.sleep(seconds / 2)  # the rate's window is the last 2 s
    samples = []
    for _ in range(4):
        await asyncio.sleep(seconds / 8)
        samples.append(rate(port))
    stop.set()
    frames = sum(await asyncio.gather(*readers))
    return statistics.median(samples), frames


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/atheria")
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    bench = subprocess.run([args.bin, "bench", "--device", "cpu", "--grid", str(args.grid), "--model", "models/default",
                            "--steps", "20"], capture_output=True, text=True)
    print(bench.stdout.strip())
    server = subprocess.Popen([args.bin, "serve", "--device", "cpu", "--bind", "127.0.0.1:0", "--grid", str(args.grid),
                               "--snapshots", "/tmp/serve-cost/snapshots", "--runs", "/tmp/serve-cost/runs"],
                              stderr=subprocess.PIPE, text=True)
    port = None
    for line in server.stderr:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    try:
        await asyncio.sleep(3)
        ratios = []
        for pair in range(args.pairs):
            alone, _ = await period(port, 0, args.seconds)
            served, frames = await period(port, args.clients, args.seconds)
            ratios.append(served / alone)
            print(f"pair {pair}: {alone:.2f} steps/s with no client, {served:.2f} with {args.clients} "
                  f"({frames} frames read): {served / alone:.3f}")
        print(f"median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) "
              f"of the steps/s with {args.clients} clients against none, grid {args.grid}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())

"""One Foxglove viewer for the benchmark: subscribes to every picture the live view offers and counts them.

Speaks ``foxglove.sdk.v1`` over ``websockets`` (as Foxglove or Lichtblick would), decodes nothing,
and reports messages and bytes per channel on its RESULT line when interrupted (SIGINT) or after
``--seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import struct
import time

from websockets.sync.client import connect

from bench.common import emit

PICTURES = 'foxglove.CompressedImage'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--url', required=True)
    parser.add_argument('--seconds', type=float, default=600.0, help='stop after this long (or on SIGINT)')
    args = parser.parse_args()
    topics: dict[int, str] = {}
    counts: dict[str, list[int]] = {}  # topic -> [messages, bytes]
    with connect(args.url, subprotocols=['foxglove.sdk.v1'], max_size=None) as ws, \
            contextlib.suppress(KeyboardInterrupt):
        end = time.monotonic() + args.seconds
        ready = False
        while time.monotonic() < end:
            try:
                frame = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            if isinstance(frame, bytes):
                if frame[0] == 1:
                    topic = topics[struct.unpack_from('<I', frame, 1)[0]]
                    counts[topic][0] += 1
                    counts[topic][1] += len(frame) - 13
                continue
            message = json.loads(frame)
            if message['op'] != 'advertise':
                continue
            pictures = [c for c in message['channels'] if c['schemaName'] == PICTURES]
            subscriptions = []
            for channel in pictures:
                subscription = len(topics) + 1
                topics[subscription] = channel['topic']
                counts[channel['topic']] = [0, 0]
                subscriptions.append({'id': subscription, 'channelId': channel['id']})
            ws.send(json.dumps({'op': 'subscribe', 'subscriptions': subscriptions}))
            if not ready:
                print(f'VIEWER READY ({len(subscriptions)} channels)', flush=True)
                ready = True
    emit({'channels': {t: {'messages': n, 'bytes': b} for t, (n, b) in counts.items()}})


if __name__ == '__main__':
    main()

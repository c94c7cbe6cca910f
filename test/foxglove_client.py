"""A Foxglove WebSocket client for the tests: third-party ``websockets`` speaking ``foxglove.sdk.v1``.

Written from the protocol, not from the SDK: JSON control messages (serverInfo, advertise,
subscribe) and binary message-data frames (opcode 1, uint32 subscription id, uint64 log time,
payload), so the tests check what any viewer receives. Protobuf payloads are decoded with the
schema the server advertised (a FileDescriptorSet), JSON payloads with ``json``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import struct
import threading
from collections import defaultdict

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from websockets.sync.client import connect

from seg_node.ros.harness import wait_for

SUBPROTOCOL = 'foxglove.sdk.v1'
MESSAGE_DATA = 1


class FoxgloveClient:
    """Connects, records every advertised channel and every message of the subscribed ones."""

    def __init__(self, url: str, timeout: float = 10.0, subprotocol: str = SUBPROTOCOL) -> None:
        self.ws = connect(url, subprotocols=[subprotocol], open_timeout=timeout, max_size=None).__enter__()
        self.server_info: dict = {}
        self.channels: dict[str, dict] = {}  # topic -> advertised channel
        self.messages: dict[str, list[tuple[int, bytes]]] = defaultdict(list)  # topic -> (log time, payload)
        self._topics_by_subscription: dict[int, str] = {}
        self._classes: dict[str, type] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for frame in self.ws:
                if isinstance(frame, bytes):
                    if frame[0] == MESSAGE_DATA:
                        subscription, log_time = struct.unpack_from('<IQ', frame, 1)
                        topic = self._topics_by_subscription.get(subscription)
                        if topic is not None:
                            self.messages[topic].append((log_time, frame[13:]))
                    continue
                message = json.loads(frame)
                if message['op'] == 'serverInfo':
                    self.server_info = message
                elif message['op'] == 'advertise':
                    self.channels.update({c['topic']: c for c in message['channels']})
                elif message['op'] == 'unadvertise':
                    gone = set(message['channelIds'])
                    self.channels = {t: c for t, c in self.channels.items() if c['id'] not in gone}
        except Exception:  # noqa: BLE001 - the connection ended (closed by the test or the server)
            pass

    def subscribe(self, *topics: str, timeout: float = 10.0) -> None:
        """Subscribe to ``topics`` once the server advertised them."""
        assert wait_for(lambda: all(t in self.channels for t in topics), timeout), \
            f'not advertised: {sorted(set(topics) - set(self.channels))}; advertised: {sorted(self.channels)}'
        subscriptions = []
        for topic in topics:
            subscription = len(self._topics_by_subscription) + 1
            self._topics_by_subscription[subscription] = topic
            subscriptions.append({'id': subscription, 'channelId': self.channels[topic]['id']})
        self.ws.send(json.dumps({'op': 'subscribe', 'subscriptions': subscriptions}))

    def unsubscribe_all(self) -> None:
        """End every subscription (politely)."""
        self.ws.send(json.dumps({'op': 'unsubscribe', 'subscriptionIds': list(self._topics_by_subscription)}))

    def decode(self, topic: str, payload: bytes):
        """The message: a protobuf object for protobuf channels, a dict for JSON ones."""
        channel = self.channels[topic]
        if channel['encoding'] == 'json':
            return json.loads(payload)
        assert channel['encoding'] == 'protobuf', channel['encoding']
        name = channel['schemaName']
        if name not in self._classes:
            files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel['schema']))
            pool = descriptor_pool.DescriptorPool()
            for file in files.file:
                pool.Add(file)
            self._classes[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        return self._classes[name].FromString(payload)

    def decoded(self, topic: str) -> list:
        """Every message received on ``topic`` so far, decoded."""
        return [self.decode(topic, payload) for _, payload in list(self.messages[topic])]

    def close(self) -> None:
        """Close with the WebSocket closing handshake."""
        self.ws.close()
        self._reader.join(5)

    def drop(self) -> None:
        """Vanish without a closing handshake, as a laptop leaving the Wi-Fi does."""
        with contextlib.suppress(OSError):
            self.ws.socket.shutdown(socket.SHUT_RDWR)
        self.ws.socket.close()  # the reader thread (a daemon) ends when websockets notices


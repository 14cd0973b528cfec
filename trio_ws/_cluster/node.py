"""A hub's node in the cluster: its link to Redis and the tasks that run it.

One node per hub opened with a backplane. It owns, in the hub's nursery:

- the **publisher**: the one task that writes to Redis. Broadcasts and
  direct sends are envelopes in a bounded outbox (``publish()`` and
  ``send_direct()`` never block); the publisher writes them on a connection
  of its own, up to ``BATCH`` ``PUBLISH`` commands in one write, and the
  presence writes through coredis. When Redis is slow or
  down the outbox drops its oldest envelopes and counts them; a batch whose
  write failed goes back to the front and is written again (receivers skip
  what they already saw, by sequence number).
- the **subscriber**: one pub/sub connection, subscribed to the channel of
  every room with local members (and to the all-connections and this node's
  channels), read in the task that parses each message and hands it to the
  hub's non-blocking local fan-out; it reads only as fast as that, so a
  backlog stays in Redis. After a lost link it reconnects with backoff and
  subscribes again to every room.
- the **probe**: a message to itself every ``probe_interval``; one not back
  within ``probe_timeout`` means the link stalled (Redis alive but not
  delivering), and the subscriber reconnects.
- the **heartbeat** that keeps this node's presence alive in Redis.

Loss is counted, never silent: ``outbox_dropped`` at the origin, ``gaps``
and ``missed`` (sequence jumps) at receivers, all in :class:`BackplaneStats`
and the log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

import trio

from .backplane import (
    BackplaneError,
    BackplaneStats,
    LinkState,
    RedisBackplane,
    import_coredis,
    shown,
)
from .envelope import DIRECT, PROBE, RESTART, EnvelopeError, decode, encode
from .keys import Keys
from .link import Link, open_link
from .resp import RedisReplyError, command, publish

__all__ = ["NODE_SHIFT", "Local", "Node"]

logger = logging.getLogger("trio_ws")

#: A connection's cluster id is ``node << NODE_SHIFT | ws.id``.
NODE_SHIFT = 32
#: Envelopes written per pipelined round trip.
BATCH = 1000
#: Channels per SUBSCRIBE / UNSUBSCRIBE command.
SUBSCRIBE_BATCH = 2000
#: Channels a node keeps a sequence counter for; past this, all restart.
MAX_SEQUENCES = 10_000
#: Seconds between two log lines about the same kind of loss.
LOG_EVERY = 10.0


class Local(Protocol):
    """What a node needs of its hub: local fan-out and local presence."""

    def deliver_remote(
        self, room: str | None, message: str | bytes, excluded: frozenset[int]
    ) -> None: ...

    def deliver_direct(self, target: int, message: str | bytes) -> None: ...

    def local_presence(self) -> Iterable[tuple[str, dict[int, dict[str, Any]]]]:
        """Each room with local members, and their ids and metadata."""
        ...


def metadata_json(metadata: dict[str, Any]) -> str:
    """Metadata as presence stores it (values JSON cannot hold become their str)."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, default=str)


class Node:
    """One hub's membership of the cluster. Created and run by the hub."""

    def __init__(self, config: RedisBackplane, local: Local) -> None:
        self.config = config
        self.keys = Keys(config.prefix)
        self._local = local
        #: This node's number, claimed in Redis when it starts.
        self.number = 0
        self._client: Any = None
        self._ttl_ms = max(1, int(config.presence_ttl * 1000))
        # -- publishing
        self._outbox: deque[tuple[bytes, bytes]] = deque()
        self._published = 0
        self._sequences: dict[bytes, int] = {}  # channel -> last sequence number used
        self._count = 0  # envelopes ever enqueued (where restarted sequences begin)
        self._presence: list[tuple[str, tuple[Any, ...]]] = []  # writes waiting
        self._resync = True  # write this node's whole presence again
        self._publisher_wake = trio.Event()
        self._publish_link: Link | None = None
        self._origin = b""  # this node's number as envelopes carry it
        # -- subscribing
        self._rooms: dict[str, int] = {}  # rooms with local members -> how many
        self._leaving: dict[str, float] = {}  # rooms just emptied -> when
        self._subscribed: set[bytes] = set()
        self._subscriptions_wake = trio.Event()
        self._seen: dict[bytes, dict[int, int]] = {}  # channel -> origin -> last seq
        # -- health
        self._state: LinkState = "connecting"
        self._publisher_up = False
        self._subscriber_up = False
        self._probes_sent: dict[int, float] = {}
        self._last_echo = -math.inf
        self._probe_rtt: float | None = None
        self._last_error: str | None = None
        self._counts = dict.fromkeys(
            (
                "dropped",
                "received",
                "gaps",
                "missed",
                "duplicates",
                "malformed",
                "reconnects",
                "refused",
            ),
            0,
        )
        self._logged: dict[str, float] = {}
        self._stop = trio.CancelScope()

    # -- life --------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, claim a node number, report started, and run the tasks
        until :meth:`stop`. Raises BackplaneError (before starting) if Redis
        does not answer within connect_timeout."""
        with self._stop:
            try:
                await self._run(task_status)
            except BaseException:
                if self._stop.cancel_called:
                    # Our own stop: coredis may complain on its way out
                    # (its cleanup runs on connections already closed).
                    logger.debug("[node %d] stopped", self.number, exc_info=True)
                    return
                raise

    async def _run(self, task_status: Any) -> None:
        coredis = import_coredis()
        config = self.config
        try:
            self._client = coredis.Redis.from_url(
                config.url,
                decode_responses=False,
                connect_timeout=config.connect_timeout,
                stream_timeout=config.probe_timeout,
            )
        except Exception as exc:
            raise BackplaneError(f"could not use Redis at {shown(config.url)}: {exc}") from exc
        async with self._client:
            number = await self._claim_number()
            self.number = number
            self._origin = number.to_bytes(4, "big")
            self._publisher_up = True
            logger.info("[node %d] joined the cluster through %s", number, shown(config.url))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._publisher)
                    nursery.start_soon(self._subscriber)
                    nursery.start_soon(self._heartbeat)
                    task_status.started()
            finally:
                await self._drop_publish_link()

    async def _claim_number(self) -> int:
        coredis = import_coredis()
        config = self.config
        info = f"{socket.gethostname()}:{os.getpid()}"
        try:
            with trio.fail_after(config.connect_timeout):
                while True:
                    number = random.randrange(1, 2**31)
                    key = self.keys.alive(number)
                    nx = coredis.PureToken.NX
                    claimed = await self._client.set(key, info, condition=nx, px=self._ttl_ms)
                    if claimed:
                        return number
        except trio.TooSlowError:
            raise BackplaneError(
                f"Redis at {shown(config.url)} did not answer within {config.connect_timeout:g} s"
            ) from None
        except Exception as exc:
            raise BackplaneError(f"could not reach Redis at {shown(config.url)}: {exc}") from exc

    def stop(self) -> None:
        """End the node's tasks (after :meth:`leave`)."""
        self._state = "closed"
        self._stop.cancel()

    async def leave(self) -> None:
        """Take this node's presence out of Redis (best effort, briefly); the
        hub cancels the tasks afterwards."""
        self._state = "closed"
        if self.number == 0 or self._client is None:
            return
        with trio.move_on_after(min(1.0, self.config.probe_timeout)):
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for room in list(self._rooms) + list(self._leaving):
                        pipe.delete([self.keys.presence(self.number, room)])
                        pipe.srem(self.keys.where(room), [str(self.number)])
                    pipe.delete([self.keys.alive(self.number)])
            except Exception as exc:
                logger.info("[node %d] could not remove its presence: %s", self.number, exc)

    # -- what the hub calls (never blocks) ----------------------------------------

    def publish(self, room: str | None, message: str | bytes, excluded: frozenset[int]) -> None:
        """Queue one broadcast for the other nodes."""
        channel = self.keys.all if room is None else self.keys.room(room)
        self._enqueue(channel, message, excluded, 0)

    def send_direct(self, target: int, message: str | bytes) -> None:
        """Queue one message for connection ``target`` of another node."""
        self._enqueue(self.keys.node(target >> NODE_SHIFT), message, (target,), DIRECT)

    def joined(self, room: str, member: int, metadata: dict[str, Any]) -> None:
        """A local member joined ``room``."""
        count = self._rooms.get(room, 0)
        self._rooms[room] = count + 1
        if count == 0 and self._leaving.pop(room, None) is None:
            self._subscriptions_wake.set()
        self._write(
            "hset", self.keys.presence(self.number, room), {member: metadata_json(metadata)}
        )
        if count == 0:
            self._write("sadd", self.keys.where(room), [str(self.number)])

    def left(self, room: str, member: int) -> None:
        """A local member left ``room``."""
        count = self._rooms.get(room, 0) - 1
        if count > 0:
            self._rooms[room] = count
            self._write("hdel", self.keys.presence(self.number, room), [str(member)])
            return
        self._rooms.pop(room, None)
        self._leaving[room] = trio.current_time()
        self._subscriptions_wake.set()
        self._write("delete", [self.keys.presence(self.number, room)])
        self._write("srem", self.keys.where(room), [str(self.number)])

    def _enqueue(
        self, channel: bytes, message: str | bytes, ids: Iterable[int] | frozenset[int], kind: int
    ) -> None:
        self._count += 1
        seq = self._sequences.get(channel)
        if seq is None:
            # A channel without a counter (new, or forgotten to bound memory)
            # restarts above every number this node used on any channel.
            if len(self._sequences) >= MAX_SEQUENCES:
                self._sequences.clear()
            seq = self._count
            kind |= RESTART
        else:
            seq += 1
        self._sequences[channel] = seq
        outbox = self._outbox
        if len(outbox) >= self.config.outbox_size:
            outbox.popleft()
            self._lost("dropped", 1, "outbox full (Redis slow or down): dropping the oldest")
        outbox.append((channel, encode(message, self.number, seq, tuple(ids), kind)))
        self._publisher_wake.set()

    def _write(self, command: str, *args: Any) -> None:
        if self.number == 0:
            return
        if len(self._presence) >= self.config.outbox_size:
            self._presence.clear()  # too far behind: rewrite the whole presence later
            self._resync = True
        else:
            self._presence.append((command, args))
        self._publisher_wake.set()

    # -- counters ------------------------------------------------------------------

    def _lost(self, counter: str, n: int, what: str) -> None:
        self._counts[counter] += n
        now = trio.current_time()
        if now >= self._logged.get(counter, -math.inf):
            self._logged[counter] = now + LOG_EVERY
            logger.warning(
                "[node %d] %s (%d %s so far)", self.number, what, self._counts[counter], counter
            )

    def _failed(self, where: str, exc: BaseException) -> None:
        self._last_error = f"{where}: {exc!r}"
        if self._state == "up":
            self._counts["reconnects"] += 1
            logger.warning(
                "[node %d] lost Redis (%s); reconnecting", self.number, self._last_error
            )
        else:
            logger.info("[node %d] Redis still unreachable (%s)", self.number, self._last_error)
        if self._state != "closed":
            self._state = "down"

    def _check_up(self) -> None:
        if self._publisher_up and self._subscriber_up and self._state != "closed":
            if self._state == "down":
                logger.warning("[node %d] Redis link restored", self.number)
            self._state = "up"

    def stats(self) -> BackplaneStats:
        counts = self._counts
        healthy = (
            self._state == "up"
            and trio.current_time() - self._last_echo <= self.config.probe_timeout
        )
        return BackplaneStats(
            node=self.number,
            state=self._state,
            healthy=healthy,
            published=self._published,
            outbox=len(self._outbox),
            outbox_dropped=counts["dropped"],
            received=counts["received"],
            gaps=counts["gaps"],
            missed=counts["missed"],
            duplicates=counts["duplicates"],
            malformed=counts["malformed"],
            reconnects=counts["reconnects"],
            refused=counts["refused"],
            subscribed_rooms=len(self._rooms) + len(self._leaving),
            probe_rtt=self._probe_rtt,
            last_error=self._last_error,
        )

    def _backoff(self, delay: float | None) -> float:
        config = self.config
        if delay is None:
            return config.reconnect_delay
        return min(config.max_reconnect_delay, delay * 2) * random.uniform(0.8, 1.2)

    # -- the publisher -------------------------------------------------------------

    async def _publisher(self) -> None:
        delay: float | None = None
        while True:
            if not (self._outbox or self._presence or self._resync):
                await self._publisher_wake.wait()
            self._publisher_wake = trio.Event()
            try:
                await self._flush()
            except Exception as exc:
                self._publisher_up = False
                self._failed("publish", exc)
                delay = self._backoff(delay)
                await trio.sleep(delay)
            else:
                delay = None
                if not self._publisher_up:
                    self._publisher_up = True
                    self._check_up()

    async def _flush(self) -> None:
        if self._presence or self._resync:
            await self._write_presence()
        outbox = self._outbox
        if not outbox:
            return
        batch = [outbox.popleft() for _ in range(min(BATCH, len(outbox)))]
        try:
            with trio.fail_after(self.config.probe_timeout):
                link = self._publish_link
                if link is None:
                    link = self._publish_link = await open_link(self.config.url)
                # The whole batch in one write, then its replies: one round
                # trip (coredis's pipeline costs ~200 us of CPU more per batch).
                await link.send(b"".join([publish(channel, data) for channel, data in batch]))
                replies = 0
                while replies < len(batch):
                    for reply in link.parser.replies():
                        replies += 1
                        if isinstance(reply, RedisReplyError):
                            self._lost("refused", 1, f"Redis refused a PUBLISH: {reply}")
                    if replies < len(batch):
                        await link.read()
        except BaseException:
            await self._drop_publish_link()
            # Nothing is known to be written: everything goes back, ahead of
            # what was queued meanwhile (receivers skip repeats by sequence).
            for _ in range(len(batch) + len(outbox) - self.config.outbox_size):
                batch.pop(0)  # the outbox is full: the oldest go
                self._lost("dropped", 1, "outbox full (Redis slow or down): dropping the oldest")
            outbox.extendleft(reversed(batch))
            self._resync = True  # Redis may have restarted: write the presence again
            raise
        self._published += len(batch)

    async def _drop_publish_link(self) -> None:
        link, self._publish_link = self._publish_link, None
        if link is not None:
            await link.aclose()

    async def _write_presence(self) -> None:
        """The waiting presence writes (or all of it), through coredis."""
        writes, self._presence = self._presence, []
        resync, self._resync = self._resync, False
        try:
            with trio.fail_after(self.config.probe_timeout):
                # raise_on_error=False: a command Redis refuses (a key of
                # another type under our prefix...) is logged below, not
                # retried for ever; a lost connection still raises.
                async with self._client.pipeline(transaction=False, raise_on_error=False) as pipe:
                    if resync:
                        self._write_all_presence(pipe)
                    else:
                        for name, args in writes:
                            getattr(pipe, name)(*args)
        except BaseException:
            self._resync = True  # written again in full once Redis answers
            raise
        for result in pipe.results or ():
            if isinstance(result, Exception):
                self._lost("refused", 1, f"Redis refused a command: {result}")

    def _write_all_presence(self, pipe: Any) -> None:
        keys, number = self.keys, self.number
        pipe.set(keys.alive(number), f"{socket.gethostname()}:{os.getpid()}", px=self._ttl_ms)
        for room, members in self._local.local_presence():
            pipe.delete([keys.presence(number, room)])
            pipe.hset(
                keys.presence(number, room),
                {member: metadata_json(metadata) for member, metadata in members.items()},
            )
            pipe.sadd(keys.where(room), [str(number)])

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.config.presence_ttl / 3)
            try:
                with trio.fail_after(self.config.probe_timeout):
                    before = await self._client.set(
                        self.keys.alive(self.number), b"alive", px=self._ttl_ms, get=True
                    )
            except Exception as exc:
                logger.debug("[node %d] heartbeat failed: %r", self.number, exc)
                continue
            if before is None:
                logger.warning(
                    "[node %d] its presence was gone from Redis (restarted, or too long "
                    "unreachable): writing it again",
                    self.number,
                )
                self._resync = True
                self._publisher_wake.set()

    # -- the subscriber ------------------------------------------------------------

    async def _subscriber(self) -> None:
        delay: float | None = None
        while True:
            try:
                await self._subscribe_and_read()
            except Exception as exc:
                if self._subscriber_up:  # it worked for a while: start the backoff again
                    delay = None
                self._subscriber_up = False
                self._failed("subscribe", exc)
            delay = self._backoff(delay)
            await trio.sleep(delay)

    async def _subscribe_and_read(self) -> None:
        # A connection of the node's own, read in this task: every message of
        # one read is handed on in one step, and a node that falls behind
        # leaves its backlog in Redis (bounded there by the pub/sub
        # client-output-buffer-limit), not in its own memory.
        self._subscribed = set()
        with trio.fail_after(self.config.connect_timeout):
            link = await open_link(self.config.url)
        try:
            with trio.fail_after(self.config.probe_timeout + self.config.connect_timeout):
                pending = await self._update_subscriptions(link)
                while pending > 0:  # every channel acknowledged: subscribed
                    await link.read()
                    pending -= self._read_replies(link)
            self._last_echo = trio.current_time()
            self._subscriber_up = True
            self._check_up()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_subscriptions, link)
                nursery.start_soon(self._probe)
                while True:
                    await link.read()
                    self._read_replies(link)
        finally:
            await link.aclose()

    def _read_replies(self, link: Link) -> int:
        """Hand on every message read; how many (un)subscriptions were acknowledged."""
        acknowledged = 0
        received, subscribed = self._received, self._subscribed
        for reply in link.parser.replies():
            if isinstance(reply, list) and len(reply) == 3:
                kind, channel, data = reply
                if kind == b"message":
                    # (not one still on its way after an UNSUBSCRIBE)
                    if channel in subscribed and isinstance(data, bytes):
                        received(channel, data)
                    continue
                if kind in (b"subscribe", b"unsubscribe"):
                    acknowledged += 1
                    continue
            if isinstance(reply, RedisReplyError):
                raise reply
        return acknowledged

    def _wanted(self) -> set[bytes]:
        keys = self.keys
        wanted = {keys.all, keys.node(self.number)}
        wanted.update(keys.room(room) for room in self._rooms)
        expired = trio.current_time() - self.config.unsubscribe_delay
        for room, since in list(self._leaving.items()):
            if since <= expired:
                del self._leaving[room]
            else:
                wanted.add(keys.room(room))
        return wanted

    async def _update_subscriptions(self, link: Link) -> int:
        """Subscribe to the channels wanted now, unsubscribe from the others;
        how many acknowledgements to expect."""
        self._subscriptions_wake = trio.Event()
        wanted = self._wanted()
        adding = sorted(wanted - self._subscribed)
        dropping = sorted(self._subscribed - wanted)
        self._subscribed.update(adding)
        self._subscribed.difference_update(dropping)
        for channel in dropping:
            self._seen.pop(channel, None)  # what comes after a new subscription is no gap
        for verb, channels in ((b"SUBSCRIBE", adding), (b"UNSUBSCRIBE", dropping)):
            for start in range(0, len(channels), SUBSCRIBE_BATCH):
                await link.send(command(verb, *channels[start : start + SUBSCRIBE_BATCH]))
        return len(adding) + len(dropping)

    async def _keep_subscriptions(self, link: Link) -> None:
        while True:
            deadline = min(self._leaving.values(), default=math.inf)
            with trio.move_on_at(deadline + self.config.unsubscribe_delay):
                await self._subscriptions_wake.wait()
            await self._update_subscriptions(link)  # acknowledged on the reading task

    async def _probe(self) -> None:
        config, channel = self.config, self.keys.node(self.number)
        sent = 0
        while True:
            sent += 1
            self._probes_sent[sent] = trio.current_time()
            self._probes_sent.pop(sent - 100, None)
            with trio.fail_after(config.probe_timeout):
                await self._client.publish(channel, encode(b"", self.number, sent, (), PROBE))
            await trio.sleep(config.probe_interval)
            silent = trio.current_time() - self._last_echo
            if silent > config.probe_timeout:
                raise BackplaneError(
                    f"no probe came back through Redis for {silent:.1f} s: the link stalled"
                )

    def _received(self, channel: bytes, data: bytes) -> None:
        """One message from Redis: parse it, hand it to the local fan-out."""
        if data[4:8] == self._origin and data[:1] == b"\xb5" and not data[1] & PROBE:
            return  # our own publication, back: delivered locally already
        try:
            envelope = decode(data)
            message = envelope.message()
        except (EnvelopeError, UnicodeDecodeError) as exc:
            self._lost("malformed", 1, f"skipped a message that is not ours on {channel!r}: {exc}")
            return
        origin, seq, kind = envelope.origin, envelope.seq, envelope.kind
        if origin == self.number:
            if kind & PROBE:  # our own probe, back: the link works
                now = self._last_echo = trio.current_time()
                sent_at = self._probes_sent.pop(seq, None)
                if sent_at is not None:
                    self._probe_rtt = now - sent_at
            return  # our own publication: delivered locally already
        if kind & PROBE:
            return
        seen = self._seen.get(channel)
        if seen is None:
            seen = self._seen[channel] = {}
        last = seen.get(origin)
        if last is not None:
            if seq <= last:
                self._counts["duplicates"] += 1
                return
            if seq != last + 1 and not kind & RESTART:
                self._lost("gaps", 1, f"messages from node {origin} were lost")
                self._counts["missed"] += seq - last - 1
        seen[origin] = seq
        self._counts["received"] += 1
        try:
            if kind & DIRECT:
                self._local.deliver_direct(envelope.ids[0], message)
            else:
                room = self.keys.room_of(channel)
                self._local.deliver_remote(room, message, frozenset(envelope.ids))
        except Exception:
            logger.exception(
                "[node %d] delivering a message from node %d failed", self.number, origin
            )

    # -- presence queries ----------------------------------------------------------

    async def room_presence(self, room: str) -> dict[int, dict[int, str]]:
        """Other live nodes' members of ``room``: node -> member id -> metadata
        JSON. Raises BackplaneError when Redis does not answer in time."""
        keys, client = self.keys, self._client
        try:
            with trio.fail_after(self.config.probe_timeout):
                nodes = sorted(int(node) for node in await client.smembers(keys.where(room)))
                nodes = [node for node in nodes if node != self.number]
                if not nodes:
                    return {}
                async with client.pipeline(transaction=False) as pipe:
                    for node in nodes:
                        pipe.exists([keys.alive(node)])
                        pipe.hgetall(keys.presence(node, room))
                results = pipe.results
                found: dict[int, dict[int, str]] = {}
                dead = []
                for index, node in enumerate(nodes):
                    alive, members = results[2 * index], results[2 * index + 1]
                    if not alive:
                        dead.append(node)
                        continue
                    found[node] = {int(k): v.decode() for k, v in members.items()}
                if dead:  # a crashed node's leftovers: tidy them away
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.srem(keys.where(room), [str(node) for node in dead])
                        pipe.delete([keys.presence(node, room) for node in dead])
                return found
        except trio.TooSlowError:
            raise BackplaneError(
                f"Redis did not answer a presence query for room {room!r}"
            ) from None
        except Exception as exc:
            raise BackplaneError(f"presence query for room {room!r} failed: {exc}") from exc

"""Typed messages: attrs classes on the wire, as JSON objects that name their
class in a tag field (``{"type": "join", "name": "ann"}``).

A :class:`MessageCodec` turns a set of message classes (a union such as
``Join | Chat``, one class, or a base class whose attrs subclasses are the
messages) into JSON text and back, with cattrs (attrs' own structuring
library) doing the work and strict checks on the way in: a value of the
wrong JSON type is an error, never converted. :func:`typed` puts two codecs
around a connection, so that a handler sends and receives instances.

cattrs is one of trio_ws's dependencies; this module imports it only when
a codec is made, so that ``import trio_ws`` does not pay for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from types import TracebackType, UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    overload,
)

import attrs

from .._conn.connection import WebSocket
from .._errors import ConnectionClosed, WebSocketError
from .._wire.close import CloseCode

if TYPE_CHECKING:
    import cattrs

__all__ = ["InvalidMessage", "MessageCodec", "TypedWebSocket", "typed"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

#: Longest close reason (RFC 6455: 123 bytes of UTF-8 in a close frame).
_MAX_REASON = 123


class InvalidMessage(WebSocketError, ValueError):
    """A received message that does not match the declared message types:
    not JSON, not an object, an unknown or missing type, a missing, unknown
    or mistyped field. ``problem`` says what, with the path of the field
    (``"chat.text: expected str"``); ``data`` is the message as received."""

    def __init__(self, problem: str, data: str | bytes) -> None:
        super().__init__(problem)
        self.problem = problem
        self.data = data


def _snake(name: str) -> str:
    """``ChatMessage`` → ``chat_message``: the default tag of a class."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _message_classes(types: Any) -> tuple[type, ...]:
    """The classes of a union, of one class, or a base class's attrs
    subclasses (recursively; the base itself too if it is an attrs class)."""
    if isinstance(types, UnionType) or get_origin(types) is Union:
        classes = get_args(types)
    elif isinstance(types, type):
        if attrs.has(types) and not type.__subclasses__(types):
            classes = (types,)
        else:
            found: list[type] = [types] if attrs.has(types) else []
            todo: list[type] = type.__subclasses__(types)
            while todo:
                cls = todo.pop(0)
                if attrs.has(cls) and cls not in found:
                    found.append(cls)
                todo.extend(type.__subclasses__(cls))
            classes = tuple(found)
    else:
        raise TypeError(f"message types are a union, a class or a base class, not {types!r}")
    if not classes:
        raise TypeError(f"{types!r} has no attrs classes to send or receive")
    for cls in classes:
        if not (isinstance(cls, type) and attrs.has(cls)):
            raise TypeError(f"message type {cls!r} is not an attrs class")
    return tuple(classes)


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    """A structure hook that takes a JSON value of exactly this type (an
    integer for a float too), never converting another."""

    def check(value: Any, _: Any) -> Any:
        if type(value) is kind:
            return value
        if kind is float and type(value) is int:
            return float(value)
        raise TypeError(f"expected {name}")

    return check


def _import_cattrs() -> Any:
    try:
        import cattrs
        import cattrs.strategies
    except ImportError:
        raise ImportError(
            "typed messages need cattrs, a dependency of trio_ws: pip install cattrs"
        ) from None
    return cattrs


class MessageCodec(Generic[T]):
    """JSON text to and from instances of a set of attrs message classes.

    ``types`` is a union (``Join | Chat``), one attrs class, or a base class
    whose attrs subclasses (all of them defined by now) are the messages.
    Each class is named on the wire by the ``tag`` field: by default its
    name in snake_case (``ChatMessage`` → ``"chat_message"``), or as
    ``names`` says. ``extra_fields``: ``"forbid"`` (default) makes a field
    that the class does not have an error, ``"ignore"`` drops it.

    On the way in, values must have the field's JSON type (a number for a
    ``str`` field is an error, an integer is accepted for a ``float``);
    nested attrs classes, lists, dicts, optional and literal fields are
    structured by cattrs. mypy does not infer ``T`` from a union given as
    a value: annotate (``codec: MessageCodec[Join | Chat] =
    MessageCodec(Join | Chat)``), or give a base class."""

    @overload
    def __init__(
        self: MessageCodec[T],
        types: type[T],
        *,
        tag: str = ...,
        names: Mapping[type, str] | None = ...,
        extra_fields: Literal["forbid", "ignore"] = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        types: Any,
        *,
        tag: str = ...,
        names: Mapping[type, str] | None = ...,
        extra_fields: Literal["forbid", "ignore"] = ...,
    ) -> None: ...

    def __init__(
        self,
        types: Any,
        *,
        tag: str = "type",
        names: Mapping[type, str] | None = None,
        extra_fields: Literal["forbid", "ignore"] = "forbid",
    ) -> None:
        lib = _import_cattrs()
        classes = _message_classes(types)
        names = dict(names or {})
        self.tag = tag
        #: The message classes by their tag, and the tags by class.
        self.classes: dict[str, type] = {}
        self.tags: dict[type, str] = {}
        for cls in classes:
            name = names.pop(cls, None) or _snake(cls.__name__)
            if name in self.classes:
                raise ValueError(f"two message classes are named {name!r}; give names=")
            self.classes[name] = cls
            self.tags[cls] = name
        if names:
            raise ValueError(f"names= gives classes that are not message types: {list(names)}")
        converter = lib.Converter(forbid_extra_keys=extra_fields == "forbid")
        for kind, label in ((str, "str"), (int, "int"), (float, "float"), (bool, "bool")):
            converter.register_structure_hook(kind, _strict(kind, label))
        self._converter: cattrs.Converter = converter
        self._structure = {
            name: converter.get_structure_hook(cls) for name, cls in self.classes.items()
        }
        self._unstructure = {cls: converter.get_unstructure_hook(cls) for cls in classes}
        self._cattrs = lib

    def encode(self, message: T) -> str:
        """``message`` as JSON text, its class's tag first. Raises TypeError
        for an instance of another class."""
        name = self.tags.get(type(message))
        if name is None:
            raise TypeError(
                f"{type(message).__name__} is not one of the message types "
                f"({', '.join(cls.__name__ for cls in self.tags)})"
            )
        fields = self._unstructure[type(message)](message)
        return json.dumps({self.tag: name, **fields}, separators=(",", ":"), ensure_ascii=False)

    def decode(self, data: str | bytes) -> T:
        """The instance that JSON text describes. Raises
        :class:`InvalidMessage` saying what does not match."""
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise InvalidMessage(f"not JSON: {exc}", data) from None
        if type(value) is not dict:
            raise InvalidMessage(f"expected a JSON object, not {type(value).__name__}", data)
        name = value.pop(self.tag, None)
        if name is None:
            raise InvalidMessage(f"no {self.tag!r} field naming the message type", data)
        structure = self._structure.get(name) if type(name) is str else None
        if structure is None:
            raise InvalidMessage(f"unknown {self.tag} {name!r}", data)
        try:
            message: T = structure(value, self.classes[name])
        except Exception as exc:  # cattrs' validation errors, and our hooks'
            raise InvalidMessage(self._problem(name, exc), data) from None
        return message

    def _problem(self, name: str, exc: Exception) -> str:
        """``chat.text: expected str`` from cattrs' nested errors."""
        if not isinstance(exc, self._cattrs.BaseValidationError):
            return f"{name}: {exc}"
        problems = []
        for line in self._cattrs.transform_error(exc, path=name, format_exception=_describe):
            text, _, path = line.rpartition(" @ ")
            problems.append(f"{path}: {text}" if path else text)
        return "; ".join(problems)


def _describe(exc: BaseException, kind: type | None) -> str:
    """How cattrs' error list phrases one problem (our hooks' TypeErrors say
    ``expected str``; cattrs' own say what they say)."""
    if isinstance(exc, KeyError):
        return "required field missing"
    if type(exc).__name__ == "ForbiddenExtraKeysError":
        extra = ", ".join(sorted(getattr(exc, "extra_fields", ())))
        return f"unknown field {extra}"
    if isinstance(exc, TypeError) and str(exc).startswith("expected "):
        return str(exc)
    if kind is not None:
        return f"expected {getattr(kind, '__name__', kind)}"
    return str(exc)


class TypedWebSocket(Generic[R, S]):
    """A connection that receives instances of ``R`` and sends instances of
    ``S`` (see :func:`typed`). It has the connection's channel shape:
    ``send``, ``receive``, ``async for``, ``aclose``, ``async with``; the
    connection itself is :attr:`ws`."""

    def __init__(
        self,
        ws: WebSocket,
        receive: MessageCodec[R],
        send: MessageCodec[S],
        on_invalid: Literal["close", "raise"],
    ) -> None:
        #: The connection itself.
        self.ws = ws
        #: The codec of the messages received.
        self.receive_codec = receive
        #: The codec of the messages sent.
        self.send_codec = send
        #: What a message that does not match does: ``"close"`` (1007) or
        #: ``"raise"`` (:class:`InvalidMessage`).
        self.on_invalid = on_invalid

    async def send(self, message: S) -> None:
        """Encode and send one message: the same cancellation semantics as
        :meth:`WebSocket.send`. Raises TypeError for another type (before
        anything is sent)."""
        await self.ws.send(self.send_codec.encode(message))

    async def receive(self) -> R:
        """Receive and decode one message (cancel-safe, as
        :meth:`WebSocket.receive`: a cancelled call loses nothing).

        A message that does not match the types closes the connection with
        1007 and a reason naming the problem, then raises
        :class:`~trio_ws.ConnectionClosed`; with ``on_invalid="raise"`` it
        raises :class:`InvalidMessage` instead (the message is consumed, the
        connection stays open)."""
        data = await self.ws.receive()
        try:
            return self.receive_codec.decode(data)
        except InvalidMessage as exc:
            if self.on_invalid == "raise":
                raise
            reason = exc.problem.encode()[:_MAX_REASON].decode(errors="ignore")
            await self.ws.aclose(CloseCode.INVALID_PAYLOAD, reason)
            info = self.ws.close_info
            assert info is not None  # aclose() returns once the connection is closed
            raise ConnectionClosed(info) from exc

    def __aiter__(self) -> TypedWebSocket[R, S]:
        return self

    async def __anext__(self) -> R:
        try:
            return await self.receive()
        except ConnectionClosed as exc:
            if exc.info.ok:
                raise StopAsyncIteration from None
            raise

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection (see :meth:`WebSocket.aclose`)."""
        await self.ws.aclose(code, reason)

    async def __aenter__(self) -> TypedWebSocket[R, S]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _codec(types: Any) -> MessageCodec[Any]:
    return types if isinstance(types, MessageCodec) else MessageCodec(types)


@overload
def typed(
    ws: WebSocket,
    *,
    receive: type[R] | MessageCodec[R],
    send: type[S] | MessageCodec[S],
    on_invalid: Literal["close", "raise"] = "close",
) -> TypedWebSocket[R, S]: ...


@overload
def typed(
    ws: WebSocket,
    *,
    receive: Any,
    send: Any,
    on_invalid: Literal["close", "raise"] = "close",
) -> TypedWebSocket[Any, Any]: ...


def typed(
    ws: WebSocket,
    *,
    receive: Any,
    send: Any,
    on_invalid: Literal["close", "raise"] = "close",
) -> TypedWebSocket[Any, Any]:
    """A typed view of ``ws``: it receives instances of the ``receive``
    message types and sends instances of the ``send`` ones, each a union
    (``Join | Chat``), one attrs class, a base class of attrs classes, or a
    :class:`MessageCodec` (make codecs once, at import time, where many
    connections use them)::

        chat = trio_ws.typed(ws, receive=ClientMessage, send=ServerMessage)
        async for message in chat:
            match message:
                case Join(name=name):
                    await chat.send(Joined(name=name))

    A received message that does not match closes the connection with 1007
    and a reason naming the problem (``"chat.text: expected str"``); with
    ``on_invalid="raise"`` the handler gets :class:`InvalidMessage` to catch
    and answer, and the connection stays open."""
    return TypedWebSocket(ws, _codec(receive), _codec(send), on_invalid)

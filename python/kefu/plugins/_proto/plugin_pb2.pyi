from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_MESSAGE_CREATED: _ClassVar[EventKind]
    EVENT_KIND_CONVERSATION_OPENED: _ClassVar[EventKind]
    EVENT_KIND_CONVERSATION_ASSIGNED: _ClassVar[EventKind]
    EVENT_KIND_CONVERSATION_CLOSED: _ClassVar[EventKind]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_MESSAGE_CREATED: EventKind
EVENT_KIND_CONVERSATION_OPENED: EventKind
EVENT_KIND_CONVERSATION_ASSIGNED: EventKind
EVENT_KIND_CONVERSATION_CLOSED: EventKind

class DescribeRequest(_message.Message):
    __slots__ = ("kefu_version",)
    KEFU_VERSION_FIELD_NUMBER: _ClassVar[int]
    kefu_version: str
    def __init__(self, kefu_version: _Optional[str] = ...) -> None: ...

class PluginInfo(_message.Message):
    __slots__ = ("name", "version", "subscriptions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    subscriptions: _containers.RepeatedScalarFieldContainer[EventKind]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., subscriptions: _Optional[_Iterable[_Union[EventKind, str]]] = ...) -> None: ...

class HostMessage(_message.Message):
    __slots__ = ("event", "heartbeat")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    heartbeat: Heartbeat
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class PluginMessage(_message.Message):
    __slots__ = ("ack", "action", "heartbeat")
    ACK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    action: Action
    heartbeat: Heartbeat
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ..., action: _Optional[_Union[Action, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ms",)
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ms: int
    def __init__(self, sent_unix_ms: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "kind", "site_id", "conv", "message", "agent_id", "occurred_unix_ms")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: EventKind
    site_id: int
    conv: int
    message: Message
    agent_id: str
    occurred_unix_ms: int
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., site_id: _Optional[int] = ..., conv: _Optional[int] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., agent_id: _Optional[str] = ..., occurred_unix_ms: _Optional[int] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("seq", "cmid", "sender_id", "sender_role", "text", "kind")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CMID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    seq: int
    cmid: str
    sender_id: str
    sender_role: str
    text: str
    kind: str
    def __init__(self, seq: _Optional[int] = ..., cmid: _Optional[str] = ..., sender_id: _Optional[str] = ..., sender_role: _Optional[str] = ..., text: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("in_reply_to", "send_message", "add_tags")
    IN_REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    SEND_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ADD_TAGS_FIELD_NUMBER: _ClassVar[int]
    in_reply_to: str
    send_message: SendMessage
    add_tags: AddTags
    def __init__(self, in_reply_to: _Optional[str] = ..., send_message: _Optional[_Union[SendMessage, _Mapping]] = ..., add_tags: _Optional[_Union[AddTags, _Mapping]] = ...) -> None: ...

class SendMessage(_message.Message):
    __slots__ = ("conv", "cmid", "text")
    CONV_FIELD_NUMBER: _ClassVar[int]
    CMID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    conv: int
    cmid: str
    text: str
    def __init__(self, conv: _Optional[int] = ..., cmid: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class AddTags(_message.Message):
    __slots__ = ("conv", "tags")
    CONV_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    conv: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, conv: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

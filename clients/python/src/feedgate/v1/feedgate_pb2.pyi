from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompareOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPARE_OP_UNSPECIFIED: _ClassVar[CompareOp]
    COMPARE_OP_EQ: _ClassVar[CompareOp]
    COMPARE_OP_NE: _ClassVar[CompareOp]
    COMPARE_OP_LT: _ClassVar[CompareOp]
    COMPARE_OP_LE: _ClassVar[CompareOp]
    COMPARE_OP_GT: _ClassVar[CompareOp]
    COMPARE_OP_GE: _ClassVar[CompareOp]

class StartPosition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    START_POSITION_LATEST: _ClassVar[StartPosition]
    START_POSITION_EARLIEST: _ClassVar[StartPosition]
    START_POSITION_OFFSET: _ClassVar[StartPosition]

class ValueKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_KIND_UNSPECIFIED: _ClassVar[ValueKind]
    VALUE_KIND_BOOL: _ClassVar[ValueKind]
    VALUE_KIND_INT: _ClassVar[ValueKind]
    VALUE_KIND_DOUBLE: _ClassVar[ValueKind]
    VALUE_KIND_TEXT: _ClassVar[ValueKind]
    VALUE_KIND_BYTES: _ClassVar[ValueKind]
    VALUE_KIND_NUMERIC: _ClassVar[ValueKind]
    VALUE_KIND_TIMESTAMP_MICROS: _ClassVar[ValueKind]
    VALUE_KIND_LOCAL_TIMESTAMP_MICROS: _ClassVar[ValueKind]
    VALUE_KIND_DATE_DAYS: _ClassVar[ValueKind]
    VALUE_KIND_JSON: _ClassVar[ValueKind]

class TopicBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOPIC_BACKEND_UNSPECIFIED: _ClassVar[TopicBackend]
    TOPIC_BACKEND_MEMORY: _ClassVar[TopicBackend]
    TOPIC_BACKEND_KAFKA: _ClassVar[TopicBackend]
    TOPIC_BACKEND_RABBITMQ: _ClassVar[TopicBackend]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_INITIAL: _ClassVar[ChangeKind]
    CHANGE_KIND_INSERT: _ClassVar[ChangeKind]
    CHANGE_KIND_UPDATE: _ClassVar[ChangeKind]
    CHANGE_KIND_DELETE: _ClassVar[ChangeKind]

class NullValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NULL_VALUE: _ClassVar[NullValue]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_MESSAGE: _ClassVar[ErrorCode]
    ERROR_CODE_VALIDATION: _ClassVar[ErrorCode]
    ERROR_CODE_UNKNOWN_COMMAND: _ClassVar[ErrorCode]
    ERROR_CODE_UNAUTHENTICATED: _ClassVar[ErrorCode]
    ERROR_CODE_PERMISSION_DENIED: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_DUPLICATE_SUBSCRIPTION: _ClassVar[ErrorCode]
    ERROR_CODE_SUBSCRIPTION_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_LIMIT_EXCEEDED: _ClassVar[ErrorCode]
    ERROR_CODE_RATE_LIMITED: _ClassVar[ErrorCode]
    ERROR_CODE_PUBLISH_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_SOURCE_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_RESUME_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
    ERROR_CODE_UNSUPPORTED_PROTOCOL_VERSION: _ClassVar[ErrorCode]
    ERROR_CODE_SLOW_CONSUMER: _ClassVar[ErrorCode]
    ERROR_CODE_SHUTTING_DOWN: _ClassVar[ErrorCode]
    ERROR_CODE_IDLE_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_SOURCE_RESET: _ClassVar[ErrorCode]
COMPARE_OP_UNSPECIFIED: CompareOp
COMPARE_OP_EQ: CompareOp
COMPARE_OP_NE: CompareOp
COMPARE_OP_LT: CompareOp
COMPARE_OP_LE: CompareOp
COMPARE_OP_GT: CompareOp
COMPARE_OP_GE: CompareOp
START_POSITION_LATEST: StartPosition
START_POSITION_EARLIEST: StartPosition
START_POSITION_OFFSET: StartPosition
VALUE_KIND_UNSPECIFIED: ValueKind
VALUE_KIND_BOOL: ValueKind
VALUE_KIND_INT: ValueKind
VALUE_KIND_DOUBLE: ValueKind
VALUE_KIND_TEXT: ValueKind
VALUE_KIND_BYTES: ValueKind
VALUE_KIND_NUMERIC: ValueKind
VALUE_KIND_TIMESTAMP_MICROS: ValueKind
VALUE_KIND_LOCAL_TIMESTAMP_MICROS: ValueKind
VALUE_KIND_DATE_DAYS: ValueKind
VALUE_KIND_JSON: ValueKind
TOPIC_BACKEND_UNSPECIFIED: TopicBackend
TOPIC_BACKEND_MEMORY: TopicBackend
TOPIC_BACKEND_KAFKA: TopicBackend
TOPIC_BACKEND_RABBITMQ: TopicBackend
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_INITIAL: ChangeKind
CHANGE_KIND_INSERT: ChangeKind
CHANGE_KIND_UPDATE: ChangeKind
CHANGE_KIND_DELETE: ChangeKind
NULL_VALUE: NullValue
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INVALID_MESSAGE: ErrorCode
ERROR_CODE_VALIDATION: ErrorCode
ERROR_CODE_UNKNOWN_COMMAND: ErrorCode
ERROR_CODE_UNAUTHENTICATED: ErrorCode
ERROR_CODE_PERMISSION_DENIED: ErrorCode
ERROR_CODE_NOT_FOUND: ErrorCode
ERROR_CODE_DUPLICATE_SUBSCRIPTION: ErrorCode
ERROR_CODE_SUBSCRIPTION_NOT_FOUND: ErrorCode
ERROR_CODE_LIMIT_EXCEEDED: ErrorCode
ERROR_CODE_RATE_LIMITED: ErrorCode
ERROR_CODE_PUBLISH_FAILED: ErrorCode
ERROR_CODE_SOURCE_UNAVAILABLE: ErrorCode
ERROR_CODE_RESUME_UNAVAILABLE: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode
ERROR_CODE_UNSUPPORTED_PROTOCOL_VERSION: ErrorCode
ERROR_CODE_SLOW_CONSUMER: ErrorCode
ERROR_CODE_SHUTTING_DOWN: ErrorCode
ERROR_CODE_IDLE_TIMEOUT: ErrorCode
ERROR_CODE_SOURCE_RESET: ErrorCode

class Request(_message.Message):
    __slots__ = ("request_id", "hello", "subscribe", "unsubscribe", "publish", "ping", "authenticate", "get_catalog")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATE_FIELD_NUMBER: _ClassVar[int]
    GET_CATALOG_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    hello: Hello
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    publish: Publish
    ping: Ping
    authenticate: Authenticate
    get_catalog: GetCatalog
    def __init__(self, request_id: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., publish: _Optional[_Union[Publish, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., authenticate: _Optional[_Union[Authenticate, _Mapping]] = ..., get_catalog: _Optional[_Union[GetCatalog, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "token", "client_name", "bundles")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    token: str
    client_name: str
    bundles: bool
    def __init__(self, protocol_version: _Optional[int] = ..., token: _Optional[str] = ..., client_name: _Optional[str] = ..., bundles: _Optional[bool] = ...) -> None: ...

class Authenticate(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("subscription_id", "table", "topic", "resume_from")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    table: TableFeed
    topic: TopicFeed
    resume_from: bytes
    def __init__(self, subscription_id: _Optional[int] = ..., table: _Optional[_Union[TableFeed, _Mapping]] = ..., topic: _Optional[_Union[TopicFeed, _Mapping]] = ..., resume_from: _Optional[bytes] = ...) -> None: ...

class TableFeed(_message.Message):
    __slots__ = ("table", "include_initial", "filter", "columns", "min_interval_ms")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INITIAL_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    table: str
    include_initial: bool
    filter: Filter
    columns: _containers.RepeatedScalarFieldContainer[str]
    min_interval_ms: int
    def __init__(self, table: _Optional[str] = ..., include_initial: _Optional[bool] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., columns: _Optional[_Iterable[str]] = ..., min_interval_ms: _Optional[int] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("compare", "one_of", "is_null", "prefix", "all_of", "any_of", "negate")
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    ONE_OF_FIELD_NUMBER: _ClassVar[int]
    IS_NULL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    ALL_OF_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    NEGATE_FIELD_NUMBER: _ClassVar[int]
    compare: Comparison
    one_of: OneOf
    is_null: IsNull
    prefix: Prefix
    all_of: Filters
    any_of: Filters
    negate: Filter
    def __init__(self, compare: _Optional[_Union[Comparison, _Mapping]] = ..., one_of: _Optional[_Union[OneOf, _Mapping]] = ..., is_null: _Optional[_Union[IsNull, _Mapping]] = ..., prefix: _Optional[_Union[Prefix, _Mapping]] = ..., all_of: _Optional[_Union[Filters, _Mapping]] = ..., any_of: _Optional[_Union[Filters, _Mapping]] = ..., negate: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, items: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class Operand(_message.Message):
    __slots__ = ("column", "path", "key", "header")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    column: str
    path: str
    key: bool
    header: str
    def __init__(self, column: _Optional[str] = ..., path: _Optional[str] = ..., key: _Optional[bool] = ..., header: _Optional[str] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("operand", "op", "value")
    OPERAND_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    operand: Operand
    op: CompareOp
    value: Value
    def __init__(self, operand: _Optional[_Union[Operand, _Mapping]] = ..., op: _Optional[_Union[CompareOp, str]] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class OneOf(_message.Message):
    __slots__ = ("operand", "values")
    OPERAND_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    operand: Operand
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, operand: _Optional[_Union[Operand, _Mapping]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class IsNull(_message.Message):
    __slots__ = ("operand", "negated")
    OPERAND_FIELD_NUMBER: _ClassVar[int]
    NEGATED_FIELD_NUMBER: _ClassVar[int]
    operand: Operand
    negated: bool
    def __init__(self, operand: _Optional[_Union[Operand, _Mapping]] = ..., negated: _Optional[bool] = ...) -> None: ...

class Prefix(_message.Message):
    __slots__ = ("operand", "prefix")
    OPERAND_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    operand: Operand
    prefix: str
    def __init__(self, operand: _Optional[_Union[Operand, _Mapping]] = ..., prefix: _Optional[str] = ...) -> None: ...

class TopicFeed(_message.Message):
    __slots__ = ("topic", "start", "start_offset", "filter", "min_interval_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    start: StartPosition
    start_offset: int
    filter: Filter
    min_interval_ms: int
    def __init__(self, topic: _Optional[str] = ..., start: _Optional[_Union[StartPosition, str]] = ..., start_offset: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., min_interval_ms: _Optional[int] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("subscription_id",)
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    def __init__(self, subscription_id: _Optional[int] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("topic", "payload", "key", "headers", "idempotency_key")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    key: str
    headers: _containers.ScalarMap[str, str]
    idempotency_key: str
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., key: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalog(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("response", "event", "bundle")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    response: Response
    event: Event
    bundle: Bundle
    def __init__(self, response: _Optional[_Union[Response, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., bundle: _Optional[_Union[Bundle, _Mapping]] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ServerMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ServerMessage, _Mapping]]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("request_id", "error", "welcome", "subscribed", "unsubscribed", "published", "pong", "authenticated", "catalog")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    error: Error
    welcome: Welcome
    subscribed: Subscribed
    unsubscribed: Unsubscribed
    published: Published
    pong: Pong
    authenticated: Authenticated
    catalog: Catalog
    def __init__(self, request_id: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., unsubscribed: _Optional[_Union[Unsubscribed, _Mapping]] = ..., published: _Optional[_Union[Published, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., authenticated: _Optional[_Union[Authenticated, _Mapping]] = ..., catalog: _Optional[_Union[Catalog, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session_id", "server_version", "protocol_version", "limits", "authenticated")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    server_version: str
    protocol_version: int
    limits: Limits
    authenticated: Authenticated
    def __init__(self, session_id: _Optional[str] = ..., server_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., authenticated: _Optional[_Union[Authenticated, _Mapping]] = ...) -> None: ...

class Authenticated(_message.Message):
    __slots__ = ("user", "roles", "expires_at_micros")
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MICROS_FIELD_NUMBER: _ClassVar[int]
    user: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    expires_at_micros: int
    def __init__(self, user: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., expires_at_micros: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_size", "ping_interval_ms", "idle_timeout_ms", "max_subscriptions", "outbound_queue", "outbound_queue_bytes", "max_frame_size")
    MAX_MESSAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PING_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_QUEUE_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_QUEUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_SIZE_FIELD_NUMBER: _ClassVar[int]
    max_message_size: int
    ping_interval_ms: int
    idle_timeout_ms: int
    max_subscriptions: int
    outbound_queue: int
    outbound_queue_bytes: int
    max_frame_size: int
    def __init__(self, max_message_size: _Optional[int] = ..., ping_interval_ms: _Optional[int] = ..., idle_timeout_ms: _Optional[int] = ..., max_subscriptions: _Optional[int] = ..., outbound_queue: _Optional[int] = ..., outbound_queue_bytes: _Optional[int] = ..., max_frame_size: _Optional[int] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("subscription_id",)
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    def __init__(self, subscription_id: _Optional[int] = ...) -> None: ...

class Unsubscribed(_message.Message):
    __slots__ = ("subscription_id",)
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    def __init__(self, subscription_id: _Optional[int] = ...) -> None: ...

class Published(_message.Message):
    __slots__ = ("cursor", "offset")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    cursor: bytes
    offset: int
    def __init__(self, cursor: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("server_time_micros",)
    SERVER_TIME_MICROS_FIELD_NUMBER: _ClassVar[int]
    server_time_micros: int
    def __init__(self, server_time_micros: _Optional[int] = ...) -> None: ...

class Catalog(_message.Message):
    __slots__ = ("tables", "topics", "database", "tables_error")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    TABLES_ERROR_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[CatalogTable]
    topics: _containers.RepeatedCompositeFieldContainer[TopicRoute]
    database: bool
    tables_error: Error
    def __init__(self, tables: _Optional[_Iterable[_Union[CatalogTable, _Mapping]]] = ..., topics: _Optional[_Iterable[_Union[TopicRoute, _Mapping]]] = ..., database: _Optional[bool] = ..., tables_error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class CatalogTable(_message.Message):
    __slots__ = ("table", "columns", "primary_key", "row_filtered")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_KEY_FIELD_NUMBER: _ClassVar[int]
    ROW_FILTERED_FIELD_NUMBER: _ClassVar[int]
    table: str
    columns: _containers.RepeatedCompositeFieldContainer[CatalogColumn]
    primary_key: _containers.RepeatedScalarFieldContainer[str]
    row_filtered: bool
    def __init__(self, table: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[CatalogColumn, _Mapping]]] = ..., primary_key: _Optional[_Iterable[str]] = ..., row_filtered: _Optional[bool] = ...) -> None: ...

class CatalogColumn(_message.Message):
    __slots__ = ("name", "type", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    kind: ValueKind
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., kind: _Optional[_Union[ValueKind, str]] = ...) -> None: ...

class TopicRoute(_message.Message):
    __slots__ = ("pattern", "backend", "history", "resume", "wildcards", "subscribe_all", "publish", "known_topics")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    WILDCARDS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_ALL_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    KNOWN_TOPICS_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    backend: TopicBackend
    history: bool
    resume: bool
    wildcards: bool
    subscribe_all: bool
    publish: bool
    known_topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pattern: _Optional[str] = ..., backend: _Optional[_Union[TopicBackend, str]] = ..., history: _Optional[bool] = ..., resume: _Optional[bool] = ..., wildcards: _Optional[bool] = ..., subscribe_all: _Optional[bool] = ..., publish: _Optional[bool] = ..., known_topics: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("subscription_id", "cursor", "change", "ready", "message", "closed", "status", "more")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: int
    cursor: bytes
    change: RowChange
    ready: Ready
    message: TopicMessage
    closed: SubscriptionClosed
    status: SourceStatus
    more: bool
    def __init__(self, subscription_id: _Optional[int] = ..., cursor: _Optional[bytes] = ..., change: _Optional[_Union[RowChange, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., message: _Optional[_Union[TopicMessage, _Mapping]] = ..., closed: _Optional[_Union[SubscriptionClosed, _Mapping]] = ..., status: _Optional[_Union[SourceStatus, _Mapping]] = ..., more: _Optional[bool] = ...) -> None: ...

class SourceStatus(_message.Message):
    __slots__ = ("available", "error")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    available: bool
    error: Error
    def __init__(self, available: _Optional[bool] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscriptionClosed(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: Error
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class TopicMessage(_message.Message):
    __slots__ = ("topic", "payload", "key", "headers", "timestamp_micros", "partition", "offset")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    key: str
    headers: _containers.ScalarMap[str, str]
    timestamp_micros: int
    partition: int
    offset: int
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., key: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., timestamp_micros: _Optional[int] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class RowChange(_message.Message):
    __slots__ = ("kind", "table", "key", "new_row", "old_row", "transaction_id", "commit_time_micros")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_ROW_FIELD_NUMBER: _ClassVar[int]
    OLD_ROW_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_MICROS_FIELD_NUMBER: _ClassVar[int]
    kind: ChangeKind
    table: str
    key: Row
    new_row: Row
    old_row: Row
    transaction_id: int
    commit_time_micros: int
    def __init__(self, kind: _Optional[_Union[ChangeKind, str]] = ..., table: _Optional[str] = ..., key: _Optional[_Union[Row, _Mapping]] = ..., new_row: _Optional[_Union[Row, _Mapping]] = ..., old_row: _Optional[_Union[Row, _Mapping]] = ..., transaction_id: _Optional[int] = ..., commit_time_micros: _Optional[int] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("columns",)
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.MessageMap[str, Value]
    def __init__(self, columns: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("null", "bool", "int", "double", "text", "bytes", "numeric", "timestamp_micros", "local_timestamp_micros", "date_days", "json")
    NULL_FIELD_NUMBER: _ClassVar[int]
    BOOL_FIELD_NUMBER: _ClassVar[int]
    INT_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    DATE_DAYS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    null: NullValue
    bool: bool
    int: int
    double: float
    text: str
    bytes: bytes
    numeric: str
    timestamp_micros: int
    local_timestamp_micros: int
    date_days: int
    json: str
    def __init__(self, null: _Optional[_Union[NullValue, str]] = ..., bool: _Optional[bool] = ..., int: _Optional[int] = ..., double: _Optional[float] = ..., text: _Optional[str] = ..., bytes: _Optional[bytes] = ..., numeric: _Optional[str] = ..., timestamp_micros: _Optional[int] = ..., local_timestamp_micros: _Optional[int] = ..., date_days: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "retryable", "retry_after_ms", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    retryable: bool
    retry_after_ms: int
    details: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

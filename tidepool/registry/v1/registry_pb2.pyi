import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_STATE_UNSPECIFIED: _ClassVar[InstanceState]
    INSTANCE_STATE_READY: _ClassVar[InstanceState]
    INSTANCE_STATE_DRAINING: _ClassVar[InstanceState]
    INSTANCE_STATE_SWITCHING: _ClassVar[InstanceState]
    INSTANCE_STATE_STALLED: _ClassVar[InstanceState]
    INSTANCE_STATE_UNHEALTHY: _ClassVar[InstanceState]
    INSTANCE_STATE_UNKNOWN: _ClassVar[InstanceState]
    INSTANCE_STATE_FLAPPING: _ClassVar[InstanceState]

class EngineStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENGINE_STATUS_UNSPECIFIED: _ClassVar[EngineStatus]
    ENGINE_STATUS_SERVING: _ClassVar[EngineStatus]
    ENGINE_STATUS_DRAINING: _ClassVar[EngineStatus]
    ENGINE_STATUS_SWITCHING: _ClassVar[EngineStatus]
INSTANCE_STATE_UNSPECIFIED: InstanceState
INSTANCE_STATE_READY: InstanceState
INSTANCE_STATE_DRAINING: InstanceState
INSTANCE_STATE_SWITCHING: InstanceState
INSTANCE_STATE_STALLED: InstanceState
INSTANCE_STATE_UNHEALTHY: InstanceState
INSTANCE_STATE_UNKNOWN: InstanceState
INSTANCE_STATE_FLAPPING: InstanceState
ENGINE_STATUS_UNSPECIFIED: EngineStatus
ENGINE_STATUS_SERVING: EngineStatus
ENGINE_STATUS_DRAINING: EngineStatus
ENGINE_STATUS_SWITCHING: EngineStatus

class GpuStats(_message.Message):
    __slots__ = ("present", "name", "utilization_percent", "memory_used_bytes", "memory_total_bytes")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    present: bool
    name: str
    utilization_percent: int
    memory_used_bytes: int
    memory_total_bytes: int
    def __init__(self, present: _Optional[bool] = ..., name: _Optional[str] = ..., utilization_percent: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("in_flight", "queued", "slots", "progress", "gpu")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    queued: int
    slots: int
    progress: int
    gpu: GpuStats
    def __init__(self, in_flight: _Optional[int] = ..., queued: _Optional[int] = ..., slots: _Optional[int] = ..., progress: _Optional[int] = ..., gpu: _Optional[_Union[GpuStats, _Mapping]] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("id", "service", "address", "weight", "effective_weight", "capacity", "labels", "state", "load", "registered_at", "last_heartbeat_at", "admin_drained", "weight_overridden")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_DRAINED_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    service: str
    address: str
    weight: int
    effective_weight: int
    capacity: int
    labels: _containers.ScalarMap[str, str]
    state: InstanceState
    load: Load
    registered_at: _timestamp_pb2.Timestamp
    last_heartbeat_at: _timestamp_pb2.Timestamp
    admin_drained: bool
    weight_overridden: bool
    def __init__(self, id: _Optional[str] = ..., service: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[int] = ..., effective_weight: _Optional[int] = ..., capacity: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[InstanceState, str]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., admin_drained: _Optional[bool] = ..., weight_overridden: _Optional[bool] = ...) -> None: ...

class Directive(_message.Message):
    __slots__ = ("kind", "model", "id")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Directive.Kind]
        KIND_DRAIN: _ClassVar[Directive.Kind]
        KIND_RESUME: _ClassVar[Directive.Kind]
        KIND_SWITCH_MODEL: _ClassVar[Directive.Kind]
    KIND_UNSPECIFIED: Directive.Kind
    KIND_DRAIN: Directive.Kind
    KIND_RESUME: Directive.Kind
    KIND_SWITCH_MODEL: Directive.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    kind: Directive.Kind
    model: str
    id: str
    def __init__(self, kind: _Optional[_Union[Directive.Kind, str]] = ..., model: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("service", "instance_id", "address", "weight", "capacity", "labels", "secret")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    address: str
    weight: int
    capacity: int
    labels: _containers.ScalarMap[str, str]
    secret: str
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[int] = ..., capacity: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., secret: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("instance", "heartbeat_interval", "ttl", "secret")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    heartbeat_interval: _duration_pb2.Duration
    ttl: _duration_pb2.Duration
    secret: str
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("instance_id", "load", "status", "secret")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    load: Load
    status: EngineStatus
    secret: str
    def __init__(self, instance_id: _Optional[str] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., status: _Optional[_Union[EngineStatus, str]] = ..., secret: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("directive",)
    DIRECTIVE_FIELD_NUMBER: _ClassVar[int]
    directive: Directive
    def __init__(self, directive: _Optional[_Union[Directive, _Mapping]] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("instance_id", "secret")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    secret: str
    def __init__(self, instance_id: _Optional[str] = ..., secret: _Optional[str] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("service", "alias")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    service: str
    alias: str
    def __init__(self, service: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("kind", "revision", "instances", "aliases", "tenants", "snapshot_more")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[WatchEvent.Kind]
        KIND_SNAPSHOT: _ClassVar[WatchEvent.Kind]
        KIND_UPSERT: _ClassVar[WatchEvent.Kind]
        KIND_DELETE: _ClassVar[WatchEvent.Kind]
        KIND_ROUTING: _ClassVar[WatchEvent.Kind]
    KIND_UNSPECIFIED: WatchEvent.Kind
    KIND_SNAPSHOT: WatchEvent.Kind
    KIND_UPSERT: WatchEvent.Kind
    KIND_DELETE: WatchEvent.Kind
    KIND_ROUTING: WatchEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_MORE_FIELD_NUMBER: _ClassVar[int]
    kind: WatchEvent.Kind
    revision: int
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    aliases: _containers.RepeatedCompositeFieldContainer[Alias]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantRoute]
    snapshot_more: bool
    def __init__(self, kind: _Optional[_Union[WatchEvent.Kind, str]] = ..., revision: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., aliases: _Optional[_Iterable[_Union[Alias, _Mapping]]] = ..., tenants: _Optional[_Iterable[_Union[TenantRoute, _Mapping]]] = ..., snapshot_more: _Optional[bool] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("alias", "tenant", "lang", "page_size", "page_token")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    alias: str
    tenant: str
    lang: str
    page_size: int
    page_token: str
    def __init__(self, alias: _Optional[str] = ..., tenant: _Optional[str] = ..., lang: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("alias", "revision", "instances", "next_page_token")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    alias: str
    revision: int
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    next_page_token: str
    def __init__(self, alias: _Optional[str] = ..., revision: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("service", "page_size", "page_token")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    service: str
    page_size: int
    page_token: str
    def __init__(self, service: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("revision", "instances", "next_page_token")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    revision: int
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    next_page_token: str
    def __init__(self, revision: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Alias(_message.Message):
    __slots__ = ("name", "selector", "service")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    selector: str
    service: str
    def __init__(self, name: _Optional[str] = ..., selector: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class TenantRoute(_message.Message):
    __slots__ = ("tenant", "lang", "aliases")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    lang: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., lang: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAliasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAliasesResponse(_message.Message):
    __slots__ = ("aliases",)
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    aliases: _containers.RepeatedCompositeFieldContainer[Alias]
    def __init__(self, aliases: _Optional[_Iterable[_Union[Alias, _Mapping]]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantRoute]
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantRoute, _Mapping]]] = ...) -> None: ...

class SetWeightRequest(_message.Message):
    __slots__ = ("instance_id", "weight", "clear")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    weight: int
    clear: bool
    def __init__(self, instance_id: _Optional[str] = ..., weight: _Optional[int] = ..., clear: _Optional[bool] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class SetLabelsRequest(_message.Message):
    __slots__ = ("instance_id", "set", "remove")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    set: _containers.ScalarMap[str, str]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance_id: _Optional[str] = ..., set: _Optional[_Mapping[str, str]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class SendDirectiveRequest(_message.Message):
    __slots__ = ("instance_id", "directive")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    directive: Directive
    def __init__(self, instance_id: _Optional[str] = ..., directive: _Optional[_Union[Directive, _Mapping]] = ...) -> None: ...

class PutAliasRequest(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: Alias
    def __init__(self, alias: _Optional[_Union[Alias, _Mapping]] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteAliasResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PutTenantRequest(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: TenantRoute
    def __init__(self, route: _Optional[_Union[TenantRoute, _Mapping]] = ...) -> None: ...

class DeleteTenantRequest(_message.Message):
    __slots__ = ("tenant", "lang")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    lang: str
    def __init__(self, tenant: _Optional[str] = ..., lang: _Optional[str] = ...) -> None: ...

class DeleteTenantResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Leadership(_message.Message):
    __slots__ = ("holder", "fence", "remaining", "granted")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    holder: str
    fence: int
    remaining: _duration_pb2.Duration
    granted: bool
    def __init__(self, holder: _Optional[str] = ..., fence: _Optional[int] = ..., remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., granted: _Optional[bool] = ...) -> None: ...

class AcquireLeadershipRequest(_message.Message):
    __slots__ = ("holder", "ttl")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    holder: str
    ttl: _duration_pb2.Duration
    def __init__(self, holder: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ReleaseLeadershipRequest(_message.Message):
    __slots__ = ("holder",)
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    holder: str
    def __init__(self, holder: _Optional[str] = ...) -> None: ...

class GetLeadershipRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Move(_message.Message):
    __slots__ = ("id", "instance_id", "from_pool", "to_pool", "state", "reason", "started_at", "updated_at", "from_lang", "to_lang")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Move.State]
        STATE_PENDING: _ClassVar[Move.State]
        STATE_DRAINING: _ClassVar[Move.State]
        STATE_SWITCHING: _ClassVar[Move.State]
        STATE_ADMITTING: _ClassVar[Move.State]
        STATE_DONE: _ClassVar[Move.State]
        STATE_ROLLING_BACK: _ClassVar[Move.State]
        STATE_ROLLED_BACK: _ClassVar[Move.State]
    STATE_UNSPECIFIED: Move.State
    STATE_PENDING: Move.State
    STATE_DRAINING: Move.State
    STATE_SWITCHING: Move.State
    STATE_ADMITTING: Move.State
    STATE_DONE: Move.State
    STATE_ROLLING_BACK: Move.State
    STATE_ROLLED_BACK: Move.State
    ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_POOL_FIELD_NUMBER: _ClassVar[int]
    TO_POOL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FROM_LANG_FIELD_NUMBER: _ClassVar[int]
    TO_LANG_FIELD_NUMBER: _ClassVar[int]
    id: str
    instance_id: str
    from_pool: str
    to_pool: str
    state: Move.State
    reason: str
    started_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    from_lang: str
    to_lang: str
    def __init__(self, id: _Optional[str] = ..., instance_id: _Optional[str] = ..., from_pool: _Optional[str] = ..., to_pool: _Optional[str] = ..., state: _Optional[_Union[Move.State, str]] = ..., reason: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., from_lang: _Optional[str] = ..., to_lang: _Optional[str] = ...) -> None: ...

class PutMoveRequest(_message.Message):
    __slots__ = ("move",)
    MOVE_FIELD_NUMBER: _ClassVar[int]
    move: Move
    def __init__(self, move: _Optional[_Union[Move, _Mapping]] = ...) -> None: ...

class ListMovesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMovesResponse(_message.Message):
    __slots__ = ("moves",)
    MOVES_FIELD_NUMBER: _ClassVar[int]
    moves: _containers.RepeatedCompositeFieldContainer[Move]
    def __init__(self, moves: _Optional[_Iterable[_Union[Move, _Mapping]]] = ...) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("name", "lang", "size", "ready", "moving_in", "moving_out", "utilization", "desired", "min", "max", "target_utilization", "high_watermark", "low_watermark")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    MOVING_IN_FIELD_NUMBER: _ClassVar[int]
    MOVING_OUT_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    TARGET_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LOW_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    name: str
    lang: str
    size: int
    ready: int
    moving_in: int
    moving_out: int
    utilization: float
    desired: int
    min: int
    max: int
    target_utilization: float
    high_watermark: float
    low_watermark: float
    def __init__(self, name: _Optional[str] = ..., lang: _Optional[str] = ..., size: _Optional[int] = ..., ready: _Optional[int] = ..., moving_in: _Optional[int] = ..., moving_out: _Optional[int] = ..., utilization: _Optional[float] = ..., desired: _Optional[int] = ..., min: _Optional[int] = ..., max: _Optional[int] = ..., target_utilization: _Optional[float] = ..., high_watermark: _Optional[float] = ..., low_watermark: _Optional[float] = ...) -> None: ...

class PutPoolsRequest(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolStatus]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolStatus, _Mapping]]] = ...) -> None: ...

class PutPoolsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools", "leader", "age")
    POOLS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolStatus]
    leader: str
    age: _duration_pb2.Duration
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolStatus, _Mapping]]] = ..., leader: _Optional[str] = ..., age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_WORD: _ClassVar[Mode]
    MODE_SENTENCE: _ClassVar[Mode]
    MODE_PARAGRAPH: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_WORD: Mode
MODE_SENTENCE: Mode
MODE_PARAGRAPH: Mode

class EvaluateRequest(_message.Message):
    __slots__ = ("audio", "text", "lang", "mode", "sample_rate_hz")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    text: str
    lang: str
    mode: Mode
    sample_rate_hz: int
    def __init__(self, audio: _Optional[bytes] = ..., text: _Optional[str] = ..., lang: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class EvaluateChunk(_message.Message):
    __slots__ = ("audio", "text", "lang", "mode", "sample_rate_hz")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    text: str
    lang: str
    mode: Mode
    sample_rate_hz: int
    def __init__(self, audio: _Optional[bytes] = ..., text: _Optional[str] = ..., lang: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("overall", "accuracy", "fluency", "completeness", "engine_id", "lang", "audio_ms")
    OVERALL_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FLUENCY_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    overall: float
    accuracy: float
    fluency: float
    completeness: float
    engine_id: str
    lang: str
    audio_ms: int
    def __init__(self, overall: _Optional[float] = ..., accuracy: _Optional[float] = ..., fluency: _Optional[float] = ..., completeness: _Optional[float] = ..., engine_id: _Optional[str] = ..., lang: _Optional[str] = ..., audio_ms: _Optional[int] = ...) -> None: ...

"""The book of moves: which engine is moving where, and the last finished ones.

Pure: validates a requested change against the book and the instance's labels,
and returns the record to store; the core writes it, then applies it here. An
instance has at most one unfinished move; finished moves beyond `KEEP_FINISHED`
are dropped oldest first.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from registry.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from registry.records import MOVE_STATES, MoveRecord
from registry.validation import validate_instance_id, validate_lang, validate_name
from tidepool.runtime.rules import POOL_LABEL

KEEP_FINISHED = 100


@dataclass(frozen=True)
class MoveRequest:
    """A PutMove call, decoded; `id` empty creates a move."""

    id: str
    instance_id: str
    to_pool: str
    state: str
    reason: str
    from_pool: str = ""
    from_lang: str = ""
    to_lang: str = ""


@dataclass
class MoveBook:
    moves: dict[str, MoveRecord] = field(default_factory=dict)

    def load(self, records: tuple[MoveRecord, ...]) -> None:
        for record in sorted(records, key=lambda r: r.started_at):
            self.moves[record.id] = record

    def active_for(self, instance_id: str) -> MoveRecord | None:
        for move in self.moves.values():
            if move.instance_id == instance_id and not move.finished:
                return move
        return None

    def listing(self) -> list[MoveRecord]:
        """Unfinished moves oldest first, then finished ones newest first."""
        active = [m for m in self.moves.values() if not m.finished]
        finished = [m for m in self.moves.values() if m.finished]
        active.sort(key=lambda m: m.started_at)
        finished.sort(key=lambda m: m.updated_at, reverse=True)
        return active + finished[:KEEP_FINISHED]

    def prepare(
        self,
        request: MoveRequest,
        labels: Mapping[str, str] | None,
        *,
        fenced: bool,
        now: float,
    ) -> MoveRecord:
        """The record a request makes, or an error naming the field; changes nothing."""
        if request.state and request.state not in MOVE_STATES:
            raise InvalidArgumentError("move.state", f"unknown state {request.state!r}")
        if request.id:
            if not fenced:
                raise FailedPreconditionError(
                    "move.id: only the scheduler leader (with x-tidepool-fence) updates a move"
                )
            return self._update(request, now)
        return self._create(request, labels, fenced=fenced, now=now)

    def _create(
        self,
        request: MoveRequest,
        labels: Mapping[str, str] | None,
        *,
        fenced: bool,
        now: float,
    ) -> MoveRecord:
        instance_id = validate_instance_id(request.instance_id, "move.instance_id")
        if labels is None:
            raise NotFoundError("instance", instance_id)
        to_pool = validate_name(request.to_pool, "move.to_pool")
        from_pool = labels.get(POOL_LABEL, "")
        if not from_pool:
            raise FailedPreconditionError(
                f"move.instance_id: {instance_id!r} is in no pool yet; "
                "the scheduler admits it first"
            )
        if from_pool == to_pool:
            raise FailedPreconditionError(
                f"move.to_pool: {instance_id!r} is already in {to_pool!r}"
            )
        state = request.state or "pending"
        if not fenced and state != "pending":
            raise InvalidArgumentError(
                "move.state", "a new move from outside the scheduler must be pending"
            )
        active = self.active_for(instance_id)
        if active is not None:
            raise FailedPreconditionError(
                f"move.instance_id: {instance_id!r} is already moving ({active.id}, {active.state})"
            )
        return MoveRecord(
            id=f"m-{uuid.uuid4().hex[:12]}",
            instance_id=instance_id,
            from_pool=from_pool,
            to_pool=to_pool,
            state=state,
            reason=request.reason[:500] or "manual",
            started_at=now,
            updated_at=now,
            from_lang=_lang(request.from_lang, "move.from_lang"),
            to_lang=_lang(request.to_lang, "move.to_lang"),
        )

    def _update(self, request: MoveRequest, now: float) -> MoveRecord:
        existing = self.moves.get(request.id)
        if existing is None:
            raise NotFoundError("move", request.id)
        if existing.finished:
            raise FailedPreconditionError(f"move.id: {request.id} already ended {existing.state}")
        if request.instance_id and request.instance_id != existing.instance_id:
            raise InvalidArgumentError("move.instance_id", "a move cannot change its instance")
        return replace(
            existing,
            state=request.state or existing.state,
            reason=request.reason[:500] or existing.reason,
            updated_at=now,
            from_lang=_lang(request.from_lang, "move.from_lang") or existing.from_lang,
            to_lang=_lang(request.to_lang, "move.to_lang") or existing.to_lang,
        )

    def put(self, record: MoveRecord) -> list[str]:
        """Apply a stored record; returns the ids of finished moves now beyond retention."""
        self.moves[record.id] = record
        finished = sorted(
            (m for m in self.moves.values() if m.finished), key=lambda m: m.updated_at
        )
        return [m.id for m in finished[: max(0, len(finished) - KEEP_FINISHED)]]

    def drop(self, move_id: str) -> None:
        self.moves.pop(move_id, None)


def _lang(value: str, field: str) -> str:
    return validate_lang(value, field) if value else ""

"""Registrations and their state machine steps (guarded updates)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from broker.crypto import KeyConfigError, UnreadableSecret
from broker.domain.errors import LimitReached
from broker.domain.ids import uuid7
from broker.domain.models import (
    Registration,
)
from broker.domain.policy import DEFAULT_POLICY, RegistrationPolicy
from broker.domain.states import Status, TransitionRefused, Trigger, next_status
from broker.store.base import StoreBase
from broker.store.policy_rows import policy_params
from broker.store.queries import Q
from broker.store.records import (
    BASIC_AUTH,
    SECRET,
    registration_from_row,
)

RESEAL_BATCH = 500


@dataclass(frozen=True, kw_only=True, slots=True)
class ResealReport:
    registrations: int  # rows rewritten
    key_id: str  # the key everything is now sealed with (hex)


class StaleRegistration(Exception):
    """The registration changed between the read a PATCH merged into and its write."""


class RegistrationQueries(StoreBase):
    async def create_registration(
        self,
        *,
        partner_id: uuid.UUID,
        url: str,
        event_types: list[str],
        description: str,
        secret: str,
        basic_auth: str | None,
        max_live: int | None = None,
        policy: RegistrationPolicy = DEFAULT_POLICY,
    ) -> Registration:
        """The new registration; LimitReached when the partner already has ``max_live`` that
        are not Deleted (checked with the partner row locked, so concurrent creates cannot
        overshoot)."""
        registration_id = uuid7()
        async with self.pool.acquire() as conn, conn.transaction():
            if max_live is not None:
                await conn.fetchval(Q.lock_partner, partner_id)
                live = await conn.fetchval(Q.count_live_registrations, partner_id)
                if live >= max_live:
                    raise LimitReached(
                        f"this partner already has {live} registrations; "
                        f"BROKER_MAX_REGISTRATIONS_PER_PARTNER allows {max_live}"
                    )
            row = await conn.fetchrow(
                Q.insert_registration,
                registration_id,
                partner_id,
                url,
                event_types,
                description,
                self.keys.seal(secret, row=registration_id, column=SECRET),
                self.keys.seal_optional(basic_auth, row=registration_id, column=BASIC_AUTH),
                *policy_params(policy),
            )
        return registration_from_row(row)

    async def list_registrations(
        self,
        partner_id: uuid.UUID,
        *,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int | None = None,
    ) -> list[Registration]:
        """Not Deleted, oldest first, at most ``limit`` (None: all), after (created_at, id)."""
        if after is None:
            rows = await self.pool.fetch(Q.list_registrations, partner_id, limit)
        else:
            rows = await self.pool.fetch(Q.list_registrations_after, partner_id, *after, limit)
        return [registration_from_row(r) for r in rows]

    async def get_registration(
        self, registration_id: uuid.UUID, partner_id: uuid.UUID
    ) -> Registration | None:
        row = await self.pool.fetchrow(Q.get_registration, registration_id, partner_id)
        return None if row is None else registration_from_row(row)

    async def _current_status(
        self, conn: asyncpg.Connection, registration_id: uuid.UUID, partner_id: uuid.UUID
    ) -> Status | None:
        row = await conn.fetchrow(Q.get_registration_any_status, registration_id, partner_id)
        return None if row is None else Status(row["status"])

    async def registration_status(
        self, registration_id: uuid.UUID, partner_id: uuid.UUID
    ) -> Status | None:
        """The status, Deleted included (None when unknown to this partner): lets the API tell
        "gone" (409 for a change) from "never existed" (404)."""
        async with self.pool.acquire() as conn:
            return await self._current_status(conn, registration_id, partner_id)

    async def update_registration(
        self,
        registration_id: uuid.UUID,
        partner_id: uuid.UUID,
        *,
        url: str | None,
        event_types: list[str] | None,
        description: str | None,
        set_basic_auth: bool,
        basic_auth: str | None,
        policy: RegistrationPolicy | None = None,
        merged_from: datetime | None = None,
    ) -> Registration | None:
        """None when unknown; TransitionRefused when Deleted. A new ``policy`` is written only
        over the version (``updated_at``) ``merged_from`` it was merged from; StaleRegistration
        when the registration changed since."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                Q.update_registration,
                registration_id,
                partner_id,
                url,
                event_types,
                description,
                set_basic_auth,
                self.keys.seal_optional(basic_auth, row=registration_id, column=BASIC_AUTH),
                policy is not None,
                merged_from,
                *policy_params(policy or DEFAULT_POLICY),
            )
            if row is not None:
                return registration_from_row(row)
            current = await self._current_status(conn, registration_id, partner_id)
        if current is None:
            return None
        if current is not Status.DELETED and policy is not None:
            raise StaleRegistration(registration_id)
        raise TransitionRefused(current, Trigger.UPDATE)

    async def transition(
        self,
        registration_id: uuid.UUID,
        partner_id: uuid.UUID,
        trigger: Trigger,
        *,
        resend_failed: bool = False,
    ) -> Registration | None:
        """Apply a partner trigger (restart, pause, unpause, delete) through the state machine.

        None when the registration is unknown to this partner, and for a second delete (a
        Deleted registration is gone for the partner); TransitionRefused when the table does not
        allow it (so restart/pause/unpause of a Deleted one is refused, naming its status).
        """
        async with self.pool.acquire() as conn:
            for _ in range(5):  # re-read when a concurrent change moved the status under us
                row = await conn.fetchrow(
                    Q.get_registration_any_status, registration_id, partner_id
                )
                current = None if row is None else Status(row["status"])
                if current is None or (current is Status.DELETED and trigger is Trigger.DELETE):
                    return None
                # raises TransitionRefused
                new = next_status(
                    current, trigger, probe_owed=bool(row and row["paused_while_restarting"])
                )
                async with conn.transaction():
                    moved = await conn.fetchrow(
                        Q.transition_registration,
                        registration_id,
                        partner_id,
                        [current.value],
                        new.value,
                    )
                    if moved is None:
                        continue
                    if new is Status.DELETED:
                        await conn.execute(Q.discard_queued_events, registration_id)
                    if trigger is Trigger.RESTART:
                        if resend_failed:
                            await conn.execute(Q.requeue_failed_events, registration_id)
                        await conn.execute(Q.reorder_queue_for_restart, registration_id)
                    # The delivery queue follows the status: woken, or parked.
                    await conn.execute(
                        Q.wake_registration, registration_id, new.value, trigger is Trigger.RESTART
                    )
                    if new in (Status.ACTIVE, Status.RESTARTING):
                        await conn.execute(Q.notify_events)
                    after = await conn.fetchrow(Q.get_registration, registration_id, partner_id)
                    return registration_from_row(after or moved)  # Deleted: no longer listed
        raise TransitionRefused(current or Status.DELETED, trigger)

    async def rotate_secret(
        self, registration_id: uuid.UUID, partner_id: uuid.UUID, secret: str, grace_seconds: int
    ) -> Registration | None:
        """None when unknown; TransitionRefused when Deleted (a rotation is an update)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                Q.rotate_secret,
                registration_id,
                partner_id,
                self.keys.seal(secret, row=registration_id, column=SECRET),
                float(grace_seconds),
            )
            if row is not None:
                return registration_from_row(row)
            current = await self._current_status(conn, registration_id, partner_id)
        if current is None:
            return None
        raise TransitionRefused(current, Trigger.UPDATE)

    # ------------------------------------------------------------------ secrets at rest

    async def check_key_ring(self) -> None:
        """Start-up check: every key that seals a stored secret is in the ring and opens it.

        Raises KeyConfigError naming the missing key ids, so a wrong key stops the process
        before it serves, instead of failing (or worse) at the first delivery.
        """
        keys = self.keys
        missing: list[str] = []
        for row in await self.pool.fetch(Q.sealed_key_samples):
            try:
                keys.open(row["sealed"], row=row["id"], column=row["kind"])
            except UnreadableSecret:
                missing.append(bytes(row["kid"]).hex())
        if missing:
            raise KeyConfigError(
                f"stored registration secrets are sealed with key id(s) {', '.join(missing)}, "
                f"which {keys.source} cannot open; configure the key(s) they were sealed with "
                "(BROKER_ENCRYPTION_KEYS, first key seals, all open)"
            )

    async def reseal_secrets(self) -> ResealReport:
        """``broker admin reencrypt``: rewrite every stored secret sealed by another key than
        the ring's first. Each row is a compare-and-set, so a concurrent rotation wins."""
        keys = self.keys
        primary = keys.primary_id
        rewritten = 0
        while rows := await self.pool.fetch(Q.registrations_to_reseal, primary, RESEAL_BATCH):
            for row in rows:
                rid = row["id"]
                old = (
                    row["secret_sealed"],
                    row["previous_secret_sealed"],
                    row["basic_auth_sealed"],
                )
                columns = (SECRET, SECRET, BASIC_AUTH)
                new = [
                    keys.seal_optional(
                        keys.open_optional(value, row=rid, column=column), row=rid, column=column
                    )
                    for value, column in zip(old, columns, strict=True)
                ]
                done = await self.pool.execute(Q.reseal_registration, rid, *old, *new)
                rewritten += done == "UPDATE 1"
        return ResealReport(registrations=rewritten, key_id=primary.hex())

"""SQLAlchemy tables of the deployment store (its own database, never Airflow's metadata DB)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from airflow_cloud_paas.store.status import DeploymentStatus

#: JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
#: SQLite only auto-increments an INTEGER PRIMARY KEY.
EventId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no time zone, so values are stored as naive UTC there and tagged UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware UTC timestamps")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with the store's own metadata (never mixed with Airflow's)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


_STATUSES = ", ".join(f"'{s.value}'" for s in DeploymentStatus)


class DeploymentRow(Base):
    """One deployment of one TOSCA template."""

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        Index(None, "owner"),
        Index(None, "status"),
        Index(None, "created_at"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    template: Mapped[str] = mapped_column(Text)
    template_hash: Mapped[str] = mapped_column(String(128))
    # Secret inputs are replaced by "***" before they get here (see DeploymentStore.create_deployment).
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    owner: Mapped[str | None] = mapped_column(String(255))
    # The group the owner shares it with (the orchestrator's userGroup); NULL: its owner's (and admins') alone.
    user_group: Mapped[str | None] = mapped_column(String(255), nullable=True)
    backend: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Who holds the running *_IN_PROGRESS action, so that a retry by the same actor is not a conflict.
    actor: Mapped[str | None] = mapped_column(String(512))
    # The lease on that action (store/lease.py): until when it holds, and the process working on it now.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_holder: Mapped[str | None] = mapped_column(String(255), nullable=True)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # True once the outputs are known masked by their secret flow (set_outputs' callers mask them); NULL on
    # records an older release wrote, until reconcile.mask_stored_outputs has looked at them.
    outputs_checked: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    dag_id: Mapped[str | None] = mapped_column(String(250))
    run_id: Mapped[str | None] = mapped_column(String(250))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ResourceRow(Base):
    """One instance of one node template of a deployment."""

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("deployment_id", "node_name", "index"),)

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    node_name: Mapped[str] = mapped_column(String(255))
    index: Mapped[int] = mapped_column("index", Integer)
    resource_id: Mapped[str | None] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(32))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventRow(Base):
    """One entry of a deployment's history."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(String(255), ForeignKey("deployments.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


metadata = Base.metadata

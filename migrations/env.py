"""Alembic environment for photosort: runs on the connection photosort hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from photosort.store import Base, include_object, schema_transaction

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate through photosort's own connection, or a URL for the alembic CLI."""
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            schema_transaction(conn, write=True)  # all revisions or none, as photosort runs them
            _run(conn)
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        include_object=include_object,
        # photosort passes a callback to report each revision as it is applied.
        **(
            {"on_version_apply": config.attributes["on_version_apply"]}
            if "on_version_apply" in config.attributes
            else {}
        ),
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()

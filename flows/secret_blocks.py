"""Secret references to Prefect `Secret` blocks: `{secret: "prefect:BLOCK"}` in a spec.

Importing this module registers the resolver with `hpo_core.secrets` (which cannot import
Prefect). The block is read when a trial launches, never earlier; Prefect is imported then.
"""

from __future__ import annotations

from hpo_core.secrets import SecretError, register_resolver


def load_secret_block(name: str) -> str:
    """The value of the Prefect `Secret` block `name` (from the Prefect API in use)."""
    from prefect.blocks.system import Secret

    try:
        block = Secret.load(name)
        assert isinstance(block, Secret)  # called sync: Prefect's dispatch types it sync-or-async
        value = block.get()
    except ValueError as err:  # Prefect's "Unable to find block document named ..."
        raise SecretError(f"no Prefect Secret block named {name!r}: {err}") from None
    return value if isinstance(value, str) else str(value)


register_resolver("prefect", load_secret_block)

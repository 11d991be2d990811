"""The queues and buckets of a stack, created by localstack/bootstrap.py."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mailstack_stack.config import REGION

_MODULE_NAME = "mailstack_localstack_bootstrap"


@dataclass(frozen=True)
class QueueResources:
    """The email queue, its dead-letter queue and the two buckets of one stack."""

    email_queue_url: str
    email_dlq_url: str
    archive_bucket: str
    attachments_bucket: str


def load_bootstrap(script: Path) -> ModuleType:
    """Import localstack/bootstrap.py from its path (it is a script, not a package module)."""
    loaded = sys.modules.get(_MODULE_NAME)
    if loaded is not None and getattr(loaded, "__file__", None) == str(script):
        return loaded
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up in sys.modules.
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def bootstrap(
    repo_root: Path, endpoint_url: str, prefix: str = "", suffix: str = ""
) -> QueueResources:
    """Run the bootstrap in-process against `endpoint_url`, with names from resources.json."""
    module = load_bootstrap(repo_root / "localstack" / "bootstrap.py")
    created = module.run(
        endpoint_url=endpoint_url,
        region=REGION,
        prefix=prefix,
        suffix=suffix,
        resources_file=repo_root / "config" / "resources.json",
    )
    names = ("email_queue_url", "email_dlq_url", "archive_bucket", "attachments_bucket")
    return QueueResources(*(str(getattr(created, name)) for name in names))
